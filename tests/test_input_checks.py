"""Bad input refused before anything runs (issue 12): one line on stderr starting with
"error:", exit code 2, no traceback. Non-finite config and evaluation floats, a --set pair in
the wrong form, and `python -m engine evaluate` with a device this machine lacks, an --out
folder that does not exist or a truncated checkpoint. No Ray: the trial folder is written by
engine.run.trial.run_trial with a Session that copies its checkpoints as Tune would."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

import models
from engine.__main__ import main as engine_main
from engine.eval.evaluate import EvalSettings
from engine.run import run
from engine.train import parse_assignments
from engine.run.trial import Session, run_trial
from engine.run.types import TrialSpec

ROOT = Path(__file__).resolve().parent.parent
FLOAT_FIELDS = [f.name for f in dataclasses.fields(models.Config) if f.type in (float, "float")]
NON_FINITE = [math.inf, -math.inf, math.nan]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in err
    return err


# --- 1. non-finite floats -----------------------------------------------------------------

def test_config_has_the_float_fields_this_file_checks():
    # the check is generic; this only guards against the list below going empty
    assert {"lr", "beta", "gamma", "sigma_x2", "kappa", "commitment"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_of_config_must_be_finite(name, value):
    with pytest.raises(ValueError) as e:
        models.resolve("UAE", **{name: value})
    message = str(e.value)
    assert message.startswith(f"{name}=") and "must be finite" in message, message
    assert "\n" not in message


def test_a_float_field_that_is_no_number_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^beta='x' must be a number"):
        models.resolve("UAE", beta="x")


@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan"])
def test_every_float_evaluation_setting_must_be_finite(value):
    names = [f.name for f in dataclasses.fields(EvalSettings) if f.type in (float, "float")]
    assert names  # ppl_epsilon
    for name in names:
        with pytest.raises(ValueError, match=f"^{name} .* must be finite"):
            EvalSettings().replace(**{name: value})


@pytest.mark.parametrize("pair", ["lr=inf", "beta=inf", "beta=nan", "kappa=-inf",
                                  "sigma_x2=inf", "gamma=nan"])
def test_a_non_finite_set_is_one_line_and_exit_2_before_the_search_starts(pair, tmp_path,
                                                                         capsys):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    out = tmp_path / "run"
    assert run(SEARCH, ["--set", pair, "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert f"{pair.split('=')[0]}=" in err and "must be finite" in err, err
    assert not out.exists()


# --- 2. a --set pair in the wrong form ----------------------------------------------------

@pytest.mark.parametrize("pair, right", [("latent_dim", "latent_dim=16"),
                                         ("latent_dim:8", "latent_dim=8"),
                                         ("latent_dim 8", "latent_dim=8"),
                                         ("beta:0.5", "beta=0.5")])
def test_a_field_in_the_wrong_form_is_shown_the_right_form(pair, right):
    with pytest.raises(ValueError) as e:
        parse_assignments("--set", [pair], models.Config())
    message = str(e.value)
    assert f"expected FIELD=VALUE, e.g. {right}" in message, message
    assert "did you mean" not in message


def test_a_tuple_setting_in_the_wrong_form_is_shown_in_its_own_form():
    with pytest.raises(ValueError, match="e.g. densities=prior,gmm10,gmm100,second_stage$"):
        parse_assignments("--eval-set", ["densities"], EvalSettings())


def test_a_misspelt_field_still_gets_the_closest_name():
    for pair in ("laten_dim=8", "laten_dim:8"):
        with pytest.raises(ValueError, match="did you mean laten_dim -> latent_dim\\?"):
            parse_assignments("--set", [pair], models.Config())


# --- 3. python -m engine evaluate -----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A trial folder as Tune leaves it: params.json and checkpoint_00000N/state.pt of a
    2-epoch RAE on digits (a few seconds), evaluated with no metric group (fast)."""
    trial = tmp_path_factory.mktemp("trial") / "RAE_seed0_00000"
    trial.mkdir()
    params = {"label": "RAE", "config": models.PRESETS["RAE"].to_dict(), "seed": 0,
              "epochs": 2, "dataset": "digits", "metric": "val/mse", "mode": "min",
              "evaluation": {"metrics": []}}
    (trial / "params.json").write_text(json.dumps(params))
    saved = []

    def report(metrics, folder):
        if folder:
            shutil.copytree(folder, trial / f"checkpoint_{len(saved):06d}")
            saved.append(metrics["epoch"])

    run_trial(TrialSpec.from_params(params), Session(report=report, trial_dir=str(trial)))
    assert saved == [1, 2]
    return trial


@pytest.fixture
def trial(trained, tmp_path) -> Path:
    """A copy of the trial folder that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / trained.name))


@pytest.fixture
def no_evaluation(monkeypatch):
    """The evaluation itself, replaced: a test of bad input fails if it is ever reached."""
    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran although the input was bad")
    monkeypatch.setattr("engine.eval.evaluate.evaluate", evaluate)


def test_evaluate_runs_on_a_good_trial_folder(trial, capsys):
    out = trial / "again.json"
    assert engine_main(["evaluate", str(trial), "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["epoch"] == 2
    assert capsys.readouterr().err == ""


def test_evaluate_refuses_cuda_on_a_machine_without_it(trial, capsys, monkeypatch,
                                                      no_evaluation):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for device in ("cuda", "cuda:1"):
        assert engine_main(["evaluate", str(trial), "--device", device]) == 2
        err = one_error_line(capsys)
        assert f"--device {device}" in err and "no CUDA GPU" in err and "--device cpu" in err


def test_evaluate_refuses_a_cuda_index_past_the_last_gpu(trial, capsys, monkeypatch,
                                                        no_evaluation):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert engine_main(["evaluate", str(trial), "--device", "cuda:2"]) == 2
    assert "cuda:0 to cuda:1" in one_error_line(capsys)


@pytest.mark.parametrize("device", ["bogus", "meta", ""])
def test_evaluate_refuses_an_unknown_device(device, trial, capsys, no_evaluation):
    assert engine_main(["evaluate", str(trial), "--device", device]) == 2
    err = one_error_line(capsys)
    assert f"--device {device!r}" in err and "use cpu or cuda" in err


def test_evaluate_refuses_an_out_folder_that_does_not_exist(trial, tmp_path, capsys,
                                                           no_evaluation):
    out = tmp_path / "no" / "such" / "metrics.json"
    assert engine_main(["evaluate", str(trial), "--device", "cpu", "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert str(out.parent) in err and "does not exist" in err and "mkdir -p" in err
    assert engine_main(["evaluate", str(trial), "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # as a copy cut short by a dying process


def test_evaluate_names_a_truncated_checkpoint_and_the_newest_readable_one(trial, capsys,
                                                                          no_evaluation):
    newest = trial / "checkpoint_000001" / "state.pt"
    _truncate(newest)
    assert engine_main(["evaluate", str(trial), "--device", "cpu"]) == 2
    err = one_error_line(capsys)
    assert str(newest) in err and "truncated" in err and "holds no checkpoint" not in err
    assert f"python -m engine evaluate {trial / 'checkpoint_000000'}" in err


def test_evaluate_names_a_truncated_checkpoint_when_none_loads(trial, capsys, no_evaluation):
    for path in trial.glob("checkpoint_*/state.pt"):
        _truncate(path)
    assert engine_main(["evaluate", str(trial), "--device", "cpu"]) == 2
    err = one_error_line(capsys)
    assert str(trial / "checkpoint_000001" / "state.pt") in err and "truncated" in err
    assert "holds no checkpoint" not in err
    # a checkpoint folder passed itself: the same message, not torch's paragraph
    assert engine_main(["evaluate", str(trial / "checkpoint_000000"), "--device", "cpu"]) == 2
    assert "truncated" in one_error_line(capsys)


def test_evaluate_takes_the_latest_epoch_not_the_last_name(trial, capsys):
    """A --resume continues a trial as a new Tune trial in its folder, numbering its
    checkpoints from 0 again: the first run's checkpoint_000005 (here epoch 1) outlives the
    continued run's checkpoint_000001 (epoch 2), and the newest is the latest epoch."""
    from engine.load import newest_checkpoint
    (trial / "checkpoint_000000").rename(trial / "checkpoint_000005")
    assert newest_checkpoint(trial)["epoch"] == 2  # by name: 1
    out = trial / "again.json"
    assert engine_main(["evaluate", str(trial), "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["epoch"] == 2


def test_evaluate_still_says_a_folder_holds_no_checkpoint(tmp_path, capsys, no_evaluation):
    assert engine_main(["evaluate", str(tmp_path), "--device", "cpu"]) == 2
    assert "holds no checkpoint" in one_error_line(capsys)
    assert engine_main(["evaluate", str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "no such folder" in one_error_line(capsys)


# --- 4. python -m engine.train's budget (a search's: tests/test_search.py) ------------------

@pytest.mark.parametrize("argv, says", [
    (["--epochs", "abc"], "--epochs 'abc': give a whole number of epochs or auto"),
    (["--epochs", "0"], "--epochs 0 must be >= 1 (or auto)"),
    (["--epochs", "auto"], "--epochs auto needs a cap: give --max-epochs N"),
    (["--epochs", "auto", "--max-epochs", "0"], "--max-epochs 0 must be >= 1"),
    (["--epochs", "auto", "--max-epochs", "5"], "--min-epochs 20 is above --max-epochs 5"),
    (["--epochs", "auto", "--max-epochs", "30", "--set", "lr_schedule=cosine"],
     "lr_schedule=cosine anneals over the total epochs"),
])
def test_engine_train_refuses_a_bad_budget_in_one_line(argv, says, capsys):
    from engine.train import main
    assert main(["--dataset", "digits", *argv]) == 2
    assert says in one_error_line(capsys)
