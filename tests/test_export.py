"""A trained model back without Ray: load_model on a trial folder reproduces the trial's final
test error; `python -m engine export` writes the run's best trial by its search metric, and
the exported folder loads in a process where Ray cannot be imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.data import load_dataset
from engine.eval.evaluate import reconstruction_mse
from engine.load import load_model
from engine.report import load_trials

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_search import ENV, search  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    proc = search(["--smoke", "--rows", "RAE,VAE", "--seeds", "2", "--eval", "reconstruction",
                   "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out


def engine(*args):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


def test_load_model_gives_the_trials_weights_and_its_final_test_error(run):
    trials = load_trials(run)
    test = load_dataset("digits").test.images
    for _, t in trials.iterrows():
        model = load_model(run / t["trial"])
        assert model.cfg.name == t["config/name"] and not model.training
        assert reconstruction_mse(model, test) == pytest.approx(t["test/mse"], rel=1e-9)


def test_export_writes_the_best_trial_and_it_loads_without_ray(run, tmp_path):
    out = tmp_path / "best"
    proc = engine("export", str(run), str(out))
    assert proc.returncode == 0, proc.stderr
    trials = load_trials(run)
    best = trials.loc[trials["val/mse"].idxmin()]  # ablation_uae: val/mse, min
    meta = json.loads((out / "model.json").read_text())
    assert (meta["trial"], meta["label"], meta["metric"]) == (best["trial"], best["label"],
                                                              "val/mse")
    assert meta["value"] == best["val/mse"] and meta["image_shape"] == [1, 8, 8]
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert weights.keys() == load_model(run / best["trial"]).state_dict().keys()
    printed = without_ray("import torch; from engine.load import load_model\n"
                          f"m = load_model({str(out)!r})\n"
                          "print(m.cfg.name, float(m.reconstruct(torch.rand(2, 1, 8, 8)).mean()"
                          " >= 0))")
    assert printed.split() == [best["config/name"], "1.0"]


def without_ray(code: str) -> str:
    """What `code` prints in a process where any import of Ray fails."""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None\n"
                           + code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("case", ["not a run", "out not empty"])
def test_a_bad_export_is_one_line_and_exit_2(run, tmp_path, case):
    out = tmp_path / "best"
    if case == "out not empty":
        out.mkdir()
        (out / "x").write_text("")
        proc = engine("export", str(run), str(out))
    else:
        proc = engine("export", str(tmp_path), str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("not an empty folder" if case == "out not empty" else "not a run folder") in lines[0]


def test_export_takes_a_row_a_seed_or_a_trial(run, tmp_path):
    """Issue 31: export took only the best trial over all rows. --row (spelled as --rows takes
    it) gives that row's best seed, --seed that seed of it, --trial that very folder."""
    trials = load_trials(run)
    rae = trials[trials["label"] == "RAE"]
    cases = {("--row", "rae"): rae.loc[rae["val/mse"].idxmin(), "trial"],
             ("--row", "VAE", "--seed", "1"): trials[(trials["label"] == "VAE")
                                                    & (trials["seed"] == 1)]["trial"].item(),
             ("--trial", trials["trial"].iloc[-1]): trials["trial"].iloc[-1]}
    for i, (flags, want) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        proc = engine("export", str(run), str(out), *flags)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "model.json").read_text())["trial"] == want, flags
    for flags, said in ((("--row", "UAE"), "--row 'UAE': no completed trial of that row; "
                         "completed rows of"), (("--row", "VAE", "--seed", "7"),
                                                "--seed 7: no completed trial of that seed of "
                                                "row 'VAE'; completed seeds: 0, 1")):
        proc = engine("export", str(run), str(tmp_path / "bad"), *flags)
        assert proc.returncode == 2 and not (tmp_path / "bad").exists()
        assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
        assert said in proc.stderr


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_fid") / "run"
    proc = search(["--smoke", "--rows", "RAE", "--eval", "fid", "--fid-samples", "300",
                   "--eval-set", "densities=gmm10,second_stage", "--set",
                   "second_stage_hidden=64", "second_stage_epochs=3", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out


def test_an_export_samples_offline_what_its_fid_sampled(fid_run, tmp_path):
    """Issue 31: the export left out the fitted density, so sampling a GMM-10 needed the data
    set again. It now holds each density the evaluation sampled from (the GMM's parameters,
    the second stage's weights), fitted again as the evaluation fitted them; the loaded
    model's sampler draws, per seed, the very latents the trial's FIDs decoded, offline."""
    from engine.eval.evaluate import EvalSettings, evaluate
    from engine.load import sample
    out = tmp_path / "best"
    proc = engine("export", str(fid_run), str(out))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["densities"] == ["gmm10", "second_stage"] and meta["density_seed"] == 0
    trial = fid_run / meta["trial"]
    params = json.loads((trial / "params.json").read_text())
    drawn = {}
    evaluate(load_model(trial), load_dataset("digits"), torch.device("cpu"),
             EvalSettings.from_dict(params["evaluation"]), seed=params["seed"], drawn=drawn)
    exported = load_model(out)
    for name in ("gmm10", "second_stage"):
        z = exported.densities[name].sample(300, seed=params["seed"]).float()
        torch.testing.assert_close(z, drawn[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the FID's images: its n, its seed
        want = exported.generate(drawn["gmm10"])
    torch.testing.assert_close(sample(exported, 300), want, rtol=1e-5, atol=1e-6)
    # offline: neither Ray nor the data set's loader can be used there
    assert without_ray("import engine.data as d; d.load_dataset = d.apply_options = None\n"
                       "from engine.load import load_model, sample\n"
                       f"m = load_model({str(out)!r})\n"
                       "print(tuple(sample(m, 4, 'second_stage').shape))").strip() == \
        "(4, 1, 8, 8)"
