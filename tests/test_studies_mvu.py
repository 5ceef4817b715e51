"""The studies of issue 6 on MVU-AE codebooks and UAE hyperparameters: codebook.py and
tune_uae.py run end to end as subprocesses at --smoke size (Ray local on this machine); the
rows' configs, the best configurations and Optuna's importances of a sampled search
(engine/report/tuning.py), MVU-AE's published numbers as data and where they stand, bad input."""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import models
from engine.report.display import metric_name
from engine import report
from engine.report import tuning
from engine.report import load_trials
from engine.run import run
from searches import papers

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SEARCHED = {"beta", "gamma", "kappa", "lr"}


def study(name: str, args: list[str], timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "searches" / f"{name}.py"), *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def search_of(name: str):
    return importlib.import_module(f"searches.{name}").SEARCH


# --- codebook.py -------------------------------------------------------------------------

def test_codebook_rows_are_the_presets_at_each_codebook_size():
    rows = search_of("codebook").rows
    assert list(rows) == ["VAE", "WAE-MMD", "VQ-VAE K=8", "VQ-VAE K=32", "VQ-VAE K=128",
                          "VQ-VAE K=512", "MVU-AE K=8", "MVU-AE K=32", "MVU-AE K=128",
                          "MVU-AE K=512"]
    for label, spec in rows.items():
        base, fields = spec if isinstance(spec, tuple) else (spec, {})
        cfg = models.resolve(base, **fields)
        preset, _, k = label.partition(" K=")
        expected = models.PRESETS[preset]
        expected = expected.replace(lr_schedule="plateau")  # annealed to its plateau
        assert cfg == (expected.replace(codebook_size=int(k)) if k else expected), label
    # the presets' own K is a row of each codebook, the one the paper's numbers go with
    assert models.PRESETS["MVU-AE"].codebook_size == papers.MVU_CODEBOOK_SIZE
    assert models.PRESETS["VQ-VAE"].codebook_size == papers.MVU_CODEBOOK_SIZE


def test_codebook_smoke_tables_reconstruction_and_latent_metrics(tmp_path):
    out = tmp_path / "cb"
    rows = ["WAE-MMD", "VQ-VAE K=8", "MVU-AE K=512"]  # three of the ten keep the test short
    proc = study("codebook", ["--smoke", "--out", str(out), "--rows", ",".join(rows)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out)
    assert set(trials["status"]) == {"completed"}
    assert list(pd.read_csv(out / "report" / "table.csv")["label"]) == rows
    for params in out.glob("*/params.json"):  # the preset, at the row's codebook size
        p = json.loads(params.read_text())
        preset, _, k = p["label"].partition(" K=")
        expected = models.PRESETS[preset].replace(lr_schedule="plateau")  # annealed
        assert models.Config.from_dict(p["config"]) == (
            expected.replace(codebook_size=int(k)) if k else expected)
    assert trials["test/psnr"].notna().all() and trials["eval/latent_var"].notna().all()
    assert (trials["eval/latent_var"] > 0).all()
    table = (out / "report" / "table.md").read_text()
    for metric in search_of("codebook").table_metrics:
        assert f"digits: {metric_name(metric)[0]}" in table
    # LPIPS and PPL: a number where AlexNet's weights are, else the reason, never both
    for metric in ("test/lpips", "eval/ppl"):
        computed = metric in trials and trials[metric].notna().all()
        assert computed != (f"{metric} not computed (3 trials)" in table), metric
    assert "reports ade20k, celebahq, ffhq; this run is on digits" in table
    assert "(paper)" not in table
    # the paper's order of the rows this run has, on each of its data sets
    assert ("order by eval/latent_var (ascending), MVU-AE Tables 1, 4 (VQGAN as VQ-VAE) on "
            "celebahq: MVU-AE K=512 < WAE-MMD; ours on digits: ") in table
    assert (out / "report" / "codebook.png").stat().st_size > 10_000


# --- MVU-AE's numbers, as data -----------------------------------------------------------

def test_mvu_ae_numbers_are_rows_of_the_search_as_read():
    paper = papers.MVU_AE_TABLES_1_4
    rows = set(search_of("codebook").rows)
    assert set(paper["numbers"]) == {"ade20k", "celebahq", "ffhq"}
    for dataset, published in paper["numbers"].items():
        assert set(published) == {"VAE", "VQ-VAE K=512", "WAE-MMD", "MVU-AE K=512"} <= rows
        for row in published.values():
            assert set(row) == {"test/psnr", "test/ssim", "test/lpips", "eval/latent_var",
                                "eval/ppl"}
    for order in paper["orders"]:
        assert set(order["rows"]) <= rows
    # the paper's own claims, as its text states them: MVU-AE best in every column of Tables
    # 1 and 4 on every data set; Sec. 5.2's PSNR gains over VAE (1.86, 3.11, 0.75 dB)
    for dataset, published in paper["numbers"].items():
        ours = published["MVU-AE K=512"]
        for label, row in published.items():
            assert ours["test/psnr"] >= row["test/psnr"] and ours["test/ssim"] >= row["test/ssim"]
            for m in ("test/lpips", "eval/latent_var", "eval/ppl"):
                assert ours[m] <= row[m], (dataset, label, m)
    gains = [paper["numbers"][ds]["MVU-AE K=512"]["test/psnr"]
             - paper["numbers"][ds]["VAE"]["test/psnr"] for ds in ("ade20k", "celebahq", "ffhq")]
    assert gains == pytest.approx([1.86, 3.11, 0.75], abs=1e-9)


def test_mvu_ae_numbers_stand_beside_ours_only_at_the_papers_setting():
    search = search_of("codebook")
    rows = {label: models.resolve(spec[0], **spec[1]) if isinstance(spec, tuple)
            else models.resolve(spec) for label, spec in search.rows.items()}
    metrics = list(search.table_metrics)
    network = papers.MVU_AE_TABLES_1_4["setting"]["celebahq"]["arch"]

    def paper(dataset, **fields):
        spec = {"paper": papers.MVU_AE_TABLES_1_4, "dataset": dataset}
        return report.table.paper_numbers(
            spec, [(k, {**c.to_dict(), **fields}) for k, c in rows.items()], metrics)
    published, notes = paper("celebahq")  # our 128-px celebahq and vector latents
    assert published == {} and f"is at arch={network}, but VAE has arch=auto" in notes[0]
    published, notes = paper("celebahq", arch=network)  # as if the library had the network
    assert published["numbers"]["MVU-AE K=512"] == {
        "test/psnr": 31.51, "test/ssim": 0.89, "test/lpips": 0.049, "eval/latent_var": 0.73,
        "eval/ppl": 9.16}
    assert published["numbers"]["VQ-VAE K=512"]["eval/ppl"] == 7442.83
    assert "MVU-AE K=8" not in published["numbers"]  # the paper's K is not stated
    assert "has no celebahq numbers for MVU-AE K=128, MVU-AE K=32" in " ".join(notes)
    published, notes = paper("digits", arch=network)
    assert published == {} and "this run is on digits" in notes[0]


# --- tune_uae.py and the report of a sampled search --------------------------------------

def test_tune_uae_smoke_reports_the_best_configs_and_the_importances(tmp_path):
    out = tmp_path / "tune"
    proc = study("tune_uae", ["--smoke", "--out", str(out)])  # 4 samples, 2 epochs, ASHA
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "search.json").read_text())
    assert saved["search"] == "optuna" and saved["samples"] == 4
    assert saved["scheduler"] == "asha" and set(saved["space"]) == SEARCHED
    trials = load_trials(out)
    assert len(trials) == 4 and set(trials["status"]) <= {"completed", "stopped early"}
    bounds = {"beta": (1e-5, 1e-2), "gamma": (1e-6, 1.0), "kappa": (1e-4, 10.0),
              "lr": (1e-4, 1e-2)}
    for params in out.glob("*/params.json"):  # the UAE-code preset but for the searched fields
        config = json.loads(params.read_text())["config"]
        for name, (low, high) in bounds.items():
            assert low <= config[name] <= high, name
        assert models.Config.from_dict(config) == models.PRESETS["UAE-code"].replace(
            lr_schedule="plateau", **{name: config[name] for name in SEARCHED})  # annealed
    # the best configuration listed is the completed trial with the lowest final val/mse
    best = pd.read_csv(out / "report" / "best_configs.csv")
    done = trials[trials["status"] == "completed"].sort_values("val/mse")
    assert list(best["trial"]) == list(done["trial"]) and list(best["rank"]) == list(
        range(1, len(done) + 1))
    top = done.iloc[0]
    assert best["val/mse"].iloc[0] == pytest.approx(top["val/mse"])
    for name in SEARCHED:
        assert best[name].iloc[0] == pytest.approx(top[f"config/{name}"], rel=1e-12)
    # Optuna's importances: exactly the four searched fields, summing to 1, over every trial
    # and (where two or more completed) over the completed ones
    imp = pd.read_csv(out / "report" / "importances.csv")
    table = (out / "report" / "table.md").read_text()
    assert set(imp["param"]) == SEARCHED and len(imp) == 4
    assert imp["importance_all"].sum() == pytest.approx(1.0)
    assert (imp["importance_all"] >= 0).all()
    assert list(imp["importance_all"]) == sorted(imp["importance_all"], reverse=True)
    if len(done) >= 2:
        assert imp["importance_completed"].sum() == pytest.approx(1.0)
    else:
        assert imp["importance_completed"].isna().all()
        assert "Completed: parameter importances need at least 2 trials" in table
    assert "## Best configurations" in table and "## Parameter importances" in table
    assert (out / "report" / "importances.md").read_text() in table
    assert "## Parameter importances" in proc.stdout
    # the run as an Optuna study (optuna-dashboard sqlite:///<run>/optuna.db) and its plots
    import optuna
    kept = optuna.load_study(study_name="tune_uae", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(kept.trials) == 4
    for t in kept.trials:
        row = trials.set_index("trial").loc[t.user_attrs["trial"]]
        assert t.params == pytest.approx({n: row[f"config/{n}"] for n in SEARCHED}, rel=1e-12)
        assert len(t.intermediate_values) == row["epochs_done"]
    assert (out / "report" / "optuna_importances.png").stat().st_size > 10_000
    assert (out / "report" / "optuna_history.png").stat().st_size > 10_000


def _trials(rows: list[tuple]) -> pd.DataFrame:
    """trials.csv-like rows: (trial, status, value of m, x, y)."""
    return pd.DataFrame([{"trial": t, "seed": 0, "status": s, "epochs_done": 3, "m": v,
                          "config/x": x, "config/y": y} for t, s, v, x, y in rows])


SPACE = {"x": '{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, '
              '"high": 1.0, "log": true}}',
         "y": '{"name": "CategoricalDistribution", "attributes": {"choices": ["a", "b"]}}'}


def test_best_configs_rank_completed_trials_by_the_metric_in_the_searchs_mode():
    trials = _trials([("t1", "completed", 0.3, 0.01, "a"), ("t2", "stopped early", 0.9, 0.1, "b"),
                      ("t3", "completed", 0.5, 0.2, "b"), ("t4", "completed", math.nan, 0.3, "a"),
                      ("t5", "error", None, 0.4, "a"), ("t6", "completed", 0.4, 0.5, "b")])
    search = {"metric": "m", "mode": "max", "space": SPACE, "search": "optuna"}
    best = tuning.best_configs(trials, search)
    assert list(best["trial"]) == ["t3", "t6", "t1"] and list(best.index) == [1, 2, 3]
    assert list(best.columns[:6]) == ["trial", "seed", "epochs_done", "x", "y", "m"]
    assert list(tuning.best_configs(trials, {**search, "mode": "min"}, k=2)["trial"]) == [
        "t1", "t6"]
    # the study holds every trial with a finite value, stopped early ones included
    study = tuning.study_of(trials, search)
    assert sorted(t.value for t in study.trials) == [0.3, 0.4, 0.5, 0.9]
    found, n, why = tuning.importances(trials, search)
    assert n == 4 and why is None and set(found) == {"x", "y"}
    assert sum(found.values()) == pytest.approx(1.0)
    found, n, why = tuning.importances(trials, search, statuses=("completed",))
    assert n == 3 and why is None and sum(found.values()) == pytest.approx(1.0)
    found, n, why = tuning.importances(trials.iloc[:1], search)
    assert found == {} and n == 1 and "at least 2 trials" in why
    # the report's sections: both tables, and the files they are written to
    text, files = tuning.report_sections(trials, search)
    assert "## Best configurations (3 of 4 completed trials, by final m, max)" in text
    assert "| param   | all 4 trials   | 3 completed   |" in text
    assert set(files) == set(tuning.FILES)


def test_the_run_is_kept_as_an_optuna_study_for_its_dashboard_and_plots(tmp_path):
    """optuna.db: a trial per run trial with its sampled params, per-epoch values and the
    state Optuna knows it by; Optuna reads it back with its own storage; the plots drawn."""
    import optuna
    from PIL import Image
    trials = _trials([("t1", "completed", 0.3, 0.01, "a"), ("t2", "stopped early", 0.9, 0.1, "b"),
                      ("t3", "completed", 0.5, 0.2, "b"), ("t5", "error", None, 0.4, "a"),
                      ("t6", "running", 0.7, 0.5, "b"), ("t7", "diverged", math.inf, 0.6, "a")])
    curves = pd.DataFrame([{"trial": t, "label": "UAE", "seed": 0, "epoch": e, "metric": "m",
                            "value": v} for t, values in {"t1": [0.5, 0.3], "t2": [0.9],
                                                          "t3": [0.6, 0.5], "t6": [0.7]}.items()
                           for e, v in enumerate(values, start=1)])
    search = {"name": "tune", "metric": "m", "mode": "min", "space": SPACE, "search": "optuna"}
    tuning.write_study(trials, curves, search, tmp_path / "optuna.db")
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["m"]
    by = {t.user_attrs["trial"]: t for t in study.trials}
    state = optuna.trial.TrialState
    assert {k: t.state for k, t in by.items()} == {
        "t1": state.COMPLETE, "t2": state.PRUNED, "t3": state.COMPLETE, "t5": state.FAIL,
        "t6": state.RUNNING, "t7": state.FAIL}
    assert by["t1"].value == 0.3 and by["t1"].params == {"x": 0.01, "y": "a"}
    assert by["t1"].intermediate_values == {1: 0.5, 2: 0.3}
    assert by["t2"].intermediate_values == {1: 0.9} and by["t2"].value is None
    assert study.best_trial.user_attrs["trial"] == "t1"
    for name, write in tuning.plot_writers(trials, curves, search).items():
        write(tmp_path / name)
        if name.endswith(".pdf"):  # the same figure as vectors, for a paper
            assert (tmp_path / name).read_bytes()[:5] == b"%PDF-", name
            continue
        image = Image.open(tmp_path / name)
        assert image.size[0] >= 600 and image.size[1] >= 300, name
        pixels = image.convert("L").getextrema()
        assert pixels[0] < 100 < pixels[1], name  # something drawn on the white
    assert sorted(p.name for p in tmp_path.glob("*.p[dn][fg]")) == sorted(tuning.PLOTS)


# --- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, argv, message", [
    ("codebook", ["--rows", "MVU-AE K=3"], "MVU-AE K=3"),
    ("codebook", ["--set", "codebook_size=0"], "codebook_size"),
    ("tune_uae", ["--samples", "0"], "--samples"),
    ("tune_uae", ["--set", "latent_dim=0"], "latent_dim"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_trial(name, argv, message, tmp_path,
                                                            capsys):
    out = tmp_path / "run"
    assert run(search_of(name), [*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert not out.exists()
