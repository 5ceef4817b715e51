"""Takida et al.'s studies of issue 6: variance_parameterization.py (Tables 4 and 5) and
noise_variance.py (Table 3). The noise a row's data option injects, against numpy; the
decoder-variance read-out against closed forms; both scripts end to end as subprocesses at
--smoke size; the published numbers as data; bad noise refused in one line, exit 2."""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import models
from engine.report.display import metric_name
from engine import report
from engine.data import (CELLS, NOISE_PARTITIONS, Dataset, Split, add_noise, apply_options,
                         check_options, load_digits)
from engine.eval.evaluate import EvalSettings, evaluate
from engine.report import load_trials
from engine.run import BadInput, Search
from engine.run.spec import row_data
from searches import papers

from test_studies import ENV, ROOT, search_of, study  # the other studies' helpers


def numpy_cells(labels: np.ndarray, height: int) -> dict[str, np.ndarray]:
    """Takida Sec. 5.3's cells for 10 classes, written independently: (N, 1, H, 1) masks."""
    small = (labels <= 4)[:, None, None, None]
    upper = (np.arange(height) < height // 2)[None, None, :, None]
    return {"SU": small & upper, "SL": small & ~upper, "BU": ~small & upper,
            "BL": ~small & ~upper}


# --- the noise, a row's data option -------------------------------------------------------

@pytest.mark.parametrize("pattern", list(NOISE_PARTITIONS))
def test_noise_is_injected_in_exactly_the_patterns_cells_with_the_stated_variance(pattern):
    clean = load_digits()
    noisy = add_noise(clean, {"partition": pattern, "variance": 0.1, "seed": 7})
    assert noisy.name == f"digits-noise-{pattern}-0.1-s7"
    noisy_cells = {"uniform": CELLS, "spatial": ("SU", "BU"), "conditional": ("SU", "SL"),
                   "spatial-conditional": ("SU",)}[pattern]  # Takida Sec. 5.3, restated
    for k, name in enumerate(("train", "val", "test")):
        x, y = getattr(clean, name), getattr(noisy, name)
        assert torch.equal(x.labels, y.labels)
        cells = numpy_cells(x.labels.numpy(), 8)
        mask = np.broadcast_to(sum(cells[c] for c in noisy_cells).astype(bool), x.images.shape)
        diff = (y.images - x.images).numpy().astype(np.float64)
        assert np.all(diff[~mask] == 0)  # nothing outside the pattern
        # inside: exactly sqrt(s^2) times numpy's draws of the documented generator
        e = np.random.default_rng([7, k]).standard_normal(x.images.shape)
        assert np.allclose(diff[mask], np.sqrt(0.1) * e[mask], atol=1e-6)
        if name == "train":  # ~5,000 to 20,000 noisy pixels: the variance within 5 %
            assert diff[mask].var() == pytest.approx(0.1, rel=0.05)
            assert abs(diff[mask].mean()) < 0.01
    again = add_noise(load_digits(), {"partition": pattern, "variance": 0.1, "seed": 7})
    assert torch.equal(again.train.images, noisy.train.images)  # deterministic
    other = add_noise(load_digits(), {"partition": pattern, "variance": 0.1, "seed": 8})
    assert not torch.equal(other.train.images, noisy.train.images)
    assert apply_options(clean, None) is clean


@pytest.mark.parametrize("options, message", [
    ({"noise": {"partition": "diagonal", "variance": 0.1}}, "noise partition 'diagonal'"),
    ({"noise": {"partition": "spatial", "variance": 0.0}}, "must be a finite number > 0"),
    ({"noise": {"partition": "spatial", "variance": -1}}, "must be a finite number > 0"),
    ({"noise": {"partition": "spatial", "variance": math.nan}}, "must be a finite number > 0"),
    ({"noise": {"partition": "spatial", "variance": "0.1"}}, "must be a finite number > 0"),
    ({"noise": {"partition": "spatial", "variance": True}}, "must be a finite number > 0"),
    ({"noise": {"partition": "spatial", "variance": 0.1, "seed": -1}}, "noise seed -1"),
    ({"noise": {"partition": "spatial", "variance": 0.1, "std": 1}}, "expected a dict of"),
    ({"blur": 1}, "data options"),
])
def test_bad_noise_is_one_line(options, message):
    with pytest.raises(ValueError, match=message) as e:
        check_options(options, "digits")
    assert "\n" not in str(e.value)


def test_label_patterns_need_labels_and_rows_are_checked_before_anything_starts():
    with pytest.raises(ValueError, match="patches has no labels"):
        check_options({"noise": {"partition": "conditional", "variance": 0.1}}, "patches")
    check_options({"noise": {"partition": "spatial", "variance": 0.1}}, "patches")
    search = Search(name="t", title="t", rows={
        "clean": "Iso-I",
        "bad": ("Iso-I", {}, {"noise": {"partition": "spatial", "variance": -0.1}})})
    assert row_data(search, ["clean"], "digits") == {}
    with pytest.raises(BadInput, match="row 'bad': noise variance -0.1"):
        row_data(search, ["clean", "bad"], "digits")


def test_noise_study_refuses_unlabelled_data_in_one_line_before_any_trial(tmp_path):
    out = tmp_path / "nv"
    proc = study("noise_variance", ["--smoke", "--dataset", "patches", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "noise partition 'conditional' splits the images by label" in proc.stderr
    assert not out.exists()


# --- the decoder variance read out per cell, against closed forms -------------------------

def constant_decoder(model, value: float) -> None:
    """Decoder output = value for every z (last Linear zeroed, sigmoid(bias) = value), so the
    residual x - x_hat is x - value whatever the draws."""
    last = [m for m in model.decoder if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.log(value / (1 - value)))


def cell_means(var: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {c: float(var[np.broadcast_to(m, var.shape)].mean())
            for c, m in numpy_cells(labels, var.shape[2]).items()}


@pytest.mark.parametrize("preset", ["Iso-I", "Diag-I", "Iso-D", "Diag-D"])
def test_variance_readout_is_the_mle_of_a_known_residual(preset):
    """With a decoder that outputs c everywhere, each MLE is a numpy mean of (x - c)^2:
    Iso-I over training images and pixels (G.4), Diag-I per pixel over training images (G.11),
    Iso-D per test image over pixels (G.7), Diag-D per test image and pixel (G.15); + 1e-6 but
    for Iso-I. eval/sigma_x2_<cell> is that estimate's mean over the cell."""
    data = add_noise(load_digits(), {"partition": "spatial", "variance": 0.05, "seed": 1})
    model = models.build(preset, data.image_shape)
    constant_decoder(model, 0.3)
    train = (data.train.images.numpy().astype(np.float64) - 0.3) ** 2
    test = (data.test.images.numpy().astype(np.float64) - 0.3) ** 2
    shape = test.shape
    expected = {"Iso-I": np.full(shape, train.mean()),
                "Diag-I": np.broadcast_to(train.mean(0) + 1e-6, shape),
                "Iso-D": np.broadcast_to(test.mean((1, 2, 3), keepdims=True) + 1e-6, shape),
                "Diag-D": test + 1e-6}[preset]
    out = evaluate(model, data, settings=EvalSettings(metrics=("variance",)))
    assert out["eval/sigma_x2"] == pytest.approx(expected.mean(), rel=1e-5)
    for cell, value in cell_means(expected, data.test.labels.numpy()).items():
        assert out[f"eval/sigma_x2_{cell}"] == pytest.approx(value, rel=1e-5), cell


def test_the_mle_recovers_noise_on_a_perfectly_fitted_clean_image():
    """Clean images all equal to the decoder's output c: the residual is the injected noise
    alone, so Diag-D's cells read s^2 where the pattern put noise and 1e-6 elsewhere, Iso-I
    the pooled s^2 x (noisy fraction), Diag-I the s^2 of its rows, Iso-D that of its images."""
    digits = load_digits()

    def const(split):
        return Split(torch.full_like(split.images, 0.4), split.labels)
    flat = Dataset("flat", const(digits.train), const(digits.val), const(digits.test))
    s2 = 0.1
    data = add_noise(flat, {"partition": "spatial-conditional", "variance": s2})
    got = {}
    for preset in ("Iso-I", "Diag-I", "Iso-D", "Diag-D"):
        model = models.build(preset, data.image_shape)
        constant_decoder(model, 0.4)
        got[preset] = evaluate(model, data, settings=EvalSettings(metrics=("variance",)))
    small_train = float((digits.train.labels <= 4).float().mean())
    small_test = float((digits.test.labels <= 4).float().mean())
    tol = dict(rel=0.12)  # a few hundred to a few thousand noisy pixels per cell
    d = got["Diag-D"]
    assert d["eval/sigma_x2_SU"] == pytest.approx(s2, **tol)
    for cell in ("SL", "BU", "BL"):
        assert d[f"eval/sigma_x2_{cell}"] == pytest.approx(1e-6, rel=1e-3)
    assert got["Iso-I"]["eval/sigma_x2_SU"] == pytest.approx(s2 * small_train / 2, **tol)
    assert got["Diag-I"]["eval/sigma_x2_SU"] == pytest.approx(s2 * small_train, **tol)
    assert got["Diag-I"]["eval/sigma_x2_SL"] == pytest.approx(1e-6, rel=1e-3)
    assert got["Iso-D"]["eval/sigma_x2_SU"] == pytest.approx(s2 / 2, **tol)
    assert got["Iso-D"]["eval/sigma_x2_BU"] == pytest.approx(1e-6, rel=1e-3)
    assert got["Iso-D"]["eval/sigma_x2"] == pytest.approx(s2 / 2 * small_test, **tol)


def test_variance_readout_of_fixed_and_trainable_variances_and_none_for_mse():
    data = load_digits()
    fixed = models.build("VAE-σx²=1", data.image_shape, sigma_x2=0.25)
    assert evaluate(fixed, data, settings=EvalSettings(metrics=("variance",)))[
        "eval/sigma_x2_BL"] == pytest.approx(0.25)
    trainable = models.build("Diag-I-trainable", data.image_shape)
    with torch.no_grad():
        trainable.log_variance.log_var.fill_(math.log(0.3))
        trainable.log_variance.log_var[0, :4] = math.log(0.1)  # the upper half
    out = evaluate(trainable, data, settings=EvalSettings(metrics=("variance",)))
    assert out["eval/sigma_x2_SU"] == pytest.approx(0.1) and out["eval/sigma_x2_BU"] == \
        pytest.approx(0.1)
    assert out["eval/sigma_x2_SL"] == pytest.approx(0.3) and out["eval/sigma_x2"] == \
        pytest.approx(0.2)
    ae = evaluate(models.build("AE", data.image_shape), data,
                  settings=EvalSettings(metrics=("variance",)))
    assert "eval/sigma_x2" not in ae and "no decoder variance" in ae["notes"]["eval/sigma_x2"]


# --- noise_variance.py end to end ---------------------------------------------------------

def test_noise_study_rows_are_the_mle_presets_with_their_noise():
    search = search_of("noise_variance")
    assert len(search.rows) == 4 * (1 + 4 * 2)
    for label, spec in search.rows.items():
        if len(spec) == 2:  # the clean rows: the preset itself, annealed
            assert label == f"{spec[0]} clean" and spec[0] in ("Iso-I", "Diag-I", "Iso-D",
                                                               "Diag-D")
            assert spec[1] == {"lr_schedule": "plateau"}
            continue
        preset, fields, options = spec
        assert fields == {"lr_schedule": "plateau"} and label == papers.takida_noise_row(
            preset, options["noise"]["partition"], options["noise"]["variance"])
        check_options(options, "digits")
    assert set(papers.TAKIDA_TABLE_3["numbers"]["mnist"]) <= set(search.rows)
    # each trial to its plateau or past its best (σ̂² follows the training fit); the other
    # Takida study keeps the variance rule (its trainable Σx rows must settle)
    assert (search.epochs, search.early_stopping) == ("auto", True)
    assert not search_of("variance_parameterization").early_stopping
    # Diag-D's orders (all four patterns) carry why they say little; no other row's do
    flagged = [o for o in search.paper["orders"] if "caveat" in o]
    assert len(flagged) == 4 and all(o["ascending"][0] == "Diag-D clean" for o in flagged)
    assert all("Diag-D" not in o["ascending"][0] for o in search.paper["orders"]
               if "caveat" not in o)


def test_noise_variance_smoke_estimates_beside_the_injected_variance(tmp_path):
    out = tmp_path / "nv"
    rows = ["Diag-D clean", "Diag-D spatial s²=0.1", "Iso-I clean", "Iso-I uniform s²=0.1"]
    proc = study("noise_variance", ["--smoke", "--out", str(out), "--rows", ",".join(rows)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out)
    assert set(trials["status"]) == {"completed"}
    saved = {r["label"]: r for r in json.loads((out / "search.json").read_text())["rows"]}
    for folder in out.glob("*/params.json"):  # the preset's config, and the row's noise
        p = json.loads(folder.read_text())
        preset = p["label"].split(" ")[0]
        assert models.Config.from_dict(p["config"]) == models.PRESETS[preset].replace(
            lr_schedule="plateau")  # annealed, as every row of the study
        noise = p.get("data") and p["data"]["noise"]
        if p["label"].endswith("clean"):
            assert not noise and "data" not in saved[p["label"]]
        else:
            assert noise == saved[p["label"]]["data"]["noise"] == {
                "partition": p["label"].split(" ")[1], "variance": 0.1, "seed": 0}
    mean = trials.groupby("label")[[f"eval/sigma_x2_{c}" for c in CELLS]].mean()
    # even after 2 epochs, the 0.1 of noise shows where it was put, and only there
    d = mean.loc["Diag-D spatial s²=0.1"]
    assert min(d["eval/sigma_x2_SU"], d["eval/sigma_x2_BU"]) > max(
        d["eval/sigma_x2_SL"], d["eval/sigma_x2_BL"]) + 0.05
    # the recovery table: estimate beside injected s^2 + the clean row's estimate
    rec = pd.read_csv(out / "report" / "recovery.csv").set_index(["row", "cell"])
    for cell in CELLS:
        r = rec.loc[("Diag-D spatial s²=0.1", cell)]
        assert r["injected"] == (0.1 if cell in ("SU", "BU") else 0.0)
        assert r["clean_estimate"] == pytest.approx(mean.loc["Diag-D clean",
                                                             f"eval/sigma_x2_{cell}"])
        assert r["estimate"] == pytest.approx(mean.loc["Diag-D spatial s²=0.1",
                                                       f"eval/sigma_x2_{cell}"])
        assert r["ratio"] == pytest.approx(r["estimate"] / (r["injected"] + r["clean_estimate"]))
        assert bool(r["sufficient"])
    assert bool(rec.loc[("Iso-I uniform s²=0.1", "SU"), "sufficient"])
    text = (out / "report" / "recovery.md").read_text()
    assert "| Diag-D spatial s²=0.1 | yes |" in text and "estimate / expected ranges" in text
    assert "# Recovery of the injected noise" in proc.stdout
    table = (out / "report" / "table.md").read_text()
    assert "digits: σx² (SU)" in table and "this run is on digits" in table
    assert ("order of Diag-D … by σ̂² in SU (ascending), Takida Sec. 5.3 (the estimate "
            "follows the injected s_x²): clean < spatial s²=0.1; ours on digits:") in table
    # the evaluate command reads the trial's noise from its checkpoint: the same estimate
    folder = trials.loc[trials["label"] == "Diag-D spatial s²=0.1", "trial"].item()
    proc = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(out / folder),
                           "--eval", "variance", "--out", str(tmp_path / "ev.json")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "ev.json").read_text())
    assert again["eval/sigma_x2_SU"] == pytest.approx(d["eval/sigma_x2_SU"], rel=1e-6)


def test_takida_table3_as_read():
    """32 rows of 4 cells; a cell group of one published value reads the same in each of its
    cells; where a parameterization can model the pattern, its noisy cells exceed its clean
    ones at s^2 = 0.1 and lie near s^2 + 0.007 (within 15 %; the caption's 5 % is not met by
    the 0.01 rows as printed, e.g. Iso-I uniform 0.013)."""
    numbers = papers.TAKIDA_TABLE_3["numbers"]["mnist"]
    assert len(numbers) == 32 and all(len(v) == 4 for v in numbers.values())
    sufficient = importlib.import_module("searches.noise_variance").SUFFICIENT
    for p, patterns in sufficient.items():
        for pattern in patterns:
            row = numbers[papers.takida_noise_row(p, pattern, 0.1)]
            noisy = NOISE_PARTITIONS[pattern]
            for cell in noisy:
                assert row[f"eval/sigma_x2_{cell}"] == pytest.approx(0.107, rel=0.15)
            for cell in set(CELLS) - set(noisy):
                assert row[f"eval/sigma_x2_{cell}"] < 0.01
    assert numbers["Diag-I spatial s²=0.1"]["eval/sigma_x2_SU"] == \
        numbers["Diag-I spatial s²=0.1"]["eval/sigma_x2_BU"] == 0.11
    assert numbers["Iso-D conditional s²=0.01"]["eval/sigma_x2_BL"] == 0.0037


# --- variance_parameterization.py end to end ----------------------------------------------

def test_variance_parameterization_rows_are_takidas_presets():
    search = search_of("variance_parameterization")
    takida = ["VAE-σx²=1", "AE", "WAE-MMD", "RAE", "RAE-GP", "Iso-I-trainable",
              "Diag-I-trainable", "Iso-D-trainable", "Diag-D-trainable", "Iso-I", "Diag-I",
              "Iso-D", "Diag-D"]
    assert list(search.rows) == [*takida, "Diag-D ε=0.001", "Diag-D ε=0.01"]
    for label in takida:
        preset, fields = search.rows[label]
        # annealed to its plateau, as every row of the study
        assert preset == label and fields == {"second_stage_hidden": 128,
                                              "lr_schedule": "plateau"}
    # the trainable per-pixel Sigma_x with its floor (Takida's 1e-6): unfloored, the row's
    # gradient was not finite by epoch 8-9 on MNIST-5k (models/variances.py)
    preset, fields = search.rows["Diag-D-trainable"]
    floored = models.resolve(preset, **fields)
    assert floored.decoder_variance == "diag_d_trainable_floor" and floored.var_floor == 1e-6
    for eps in (0.001, 0.01):  # the ε sweep of Diag-D by MLE, beside the paper's rows
        assert search.rows[f"Diag-D ε={eps:g}"] == ("Diag-D", {
            "second_stage_hidden": 128, "lr_schedule": "plateau", "mle_eps": eps})
    assert set(search.evaluation.densities) == {"prior", "second_stage", "gmm10", "gmm100"}
    for dataset, published in papers.TAKIDA_TABLES_4_5["numbers"].items():
        assert set(published) == set(takida), dataset
        assert all(v > 0 for row in published.values() for v in row.values())
    mnist = papers.TAKIDA_TABLES_4_5["numbers"]["mnist"]
    assert mnist["Diag-D"] == {"test/mse_sum": 6.80, "eval/fid_sample_prior": 16.64,
                               "eval/fid_sample_second_stage": 10.49,
                               "eval/fid_sample_gmm10": 10.05, "eval/fid_interp_mid": 11.96,
                               "eval/fid_interp_rand": 8.68}
    assert "eval/fid_sample_prior" not in mnist["AE"]  # "-" in the paper
    assert papers.TAKIDA_TABLES_4_5["numbers"]["celeba"]["Iso-D"]["eval/fid_sample_gmm100"] \
        == 40.39


def test_takida_tables_4_5_stand_only_at_the_papers_setting():
    search = search_of("variance_parameterization")
    rows = [(k, models.resolve(b, **f).to_dict()) for k, (b, f) in search.rows.items()]
    spec = {"paper": papers.TAKIDA_TABLES_4_5, "dataset": "mnist"}
    published, notes = report.table.paper_numbers(spec, rows, list(search.table_metrics))
    assert published["numbers"]["Iso-I"]["eval/fid_sample_gmm10"] == 12.21
    assert "the (paper) columns are Takida Tables 4 and 5 on mnist, at latent_dim=16" in notes[0]
    small = [(k, {**c, "latent_dim": 8}) for k, c in rows]
    assert report.table.paper_numbers(spec, small, list(search.table_metrics))[0] == {}


def test_variance_parameterization_smoke_table_and_orders(tmp_path):
    out = tmp_path / "vp"
    rows = ["VAE-σx²=1", "AE", "Iso-I-trainable", "Iso-I"]
    proc = study("variance_parameterization",
                 ["--smoke", "--out", str(out), "--rows", ",".join(rows)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out)
    assert set(trials["status"]) == {"completed"}
    labels = list(pd.read_csv(out / "report" / "table.csv")["label"])
    # the rows in order, then at most the report's "real data" floor row (issue 28, part 3)
    assert labels[:len(rows)] == rows and set(labels[len(rows):]) <= {"real data"}
    for folder in out.glob("*/params.json"):
        p = json.loads(folder.read_text())
        assert models.Config.from_dict(p["config"]) == models.PRESETS[p["label"]].replace(
            second_stage_hidden=128, lr_schedule="plateau")
        assert "data" not in p  # no data options: the params as every other search's
    for _, t in trials.iterrows():  # the per-pixel and summed MSE are one number
        assert t["test/mse_sum"] == pytest.approx(t["test/mse"] * 64)
        for m in ("eval/fid_sample_prior", "eval/fid_sample_gmm10", "eval/fid_interp_mid",
                  "eval/fid_interp_rand"):
            assert t[m] > 0
    table = (out / "report" / "table.md").read_text()
    for metric in search_of("variance_parameterization").table_metrics:
        assert f"digits: {metric_name(metric)[0]}" in table
    assert "Takida Tables 4 and 5 reports mnist, celeba; this run is on digits" in table
    assert ("order by FID of GMM-10 samples (ascending), Takida Tables 4 and 5 on mnist: "
            "Iso-I < AE < Iso-I-trainable < VAE-σx²=1; ours on digits: ") in table
