"""`vae-ablations evaluate RUN` (issue 31, item 8): a finished run's trials evaluated again
after the search, each as a Ray Task, each trial's metrics in its own evaluation.json, and
the run's table rewritten with them; a trial whose evaluation fails costs only its own."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from engine.__main__ import main as engine_main
from engine.files import EVALUATION_FAILED_FILE, EVALUATION_FILE
from engine.report import evaluations, load_trials

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "127.0.0.1:9"}
# the reconstruction group's metrics that ablation_uae's table does not declare: they come
# into the table only because the later evaluation computed them
ADDED = {"test/ssim": "SSIM", "test/mse_sum": "MSE (sum over pixels)"}


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """Two rows by two seeds of ablation_uae on digits, trained without any evaluation
    (--eval none: no test/ metric in any result line), seconds per trial."""
    out = tmp_path_factory.mktemp("runs") / "uae"
    proc = cli("searches/ablation_uae.py", "--smoke", "--rows", "RAE,VAE", "--seeds", "2",
               "--eval", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def evaluated(searched, tmp_path_factory):
    """A copy of the run, VAE seed 1's checkpoints damaged, evaluated with `evaluate RUN
    --eval reconstruction`: (run, the CLI's result, the table before, result.json before)."""
    run = Path(shutil.copytree(searched, tmp_path_factory.mktemp("evaluated") / "uae"))
    for state in next(run.glob("VAE_seed1_*")).glob("checkpoint_*/state.pt"):
        state.write_bytes(state.read_bytes()[:1000])  # as a copy cut short
    before = (run / "report" / "table.md").read_text()
    lines = {p.parent.name: p.read_bytes() for p in run.glob("*/result.json")}
    proc = cli("-m", "engine", "evaluate", str(run), "--eval", "reconstruction")
    return run, proc, before, lines


def test_evaluate_run_merges_each_trials_new_metrics_into_the_table(evaluated):
    run, proc, before, lines = evaluated
    assert proc.returncode == 1, proc.stderr[-3000:]  # one trial failed; the others landed
    table = (run / "report" / "table.md").read_text()
    header = table.split("\n| label")[1].split("\n")[0]
    for name in ADDED.values():
        assert f"digits: {name}" not in before.split("\n\n")[1]  # the table had not the column
        assert f"digits: {name}" in header
    assert "digits: MSE ↓" in header and "digits: val. MSE" not in header
    trials = load_trials(run).set_index("trial")
    good = [t for t in trials.index if not t.startswith("VAE_seed1_")]
    assert len(good) == 3
    for trial in good:
        evaluation = json.loads((run / trial / EVALUATION_FILE).read_text())
        assert evaluation["settings"]["metrics"] == ["reconstruction"]
        assert evaluation["epoch"] == trials.loc[trial, "epochs_done"] == 2
        for metric in ("test/mse", "test/psnr", *ADDED):
            assert trials.loc[trial, metric] == pytest.approx(evaluation[metric]), metric
    table_csv = pd.read_csv(run / "report" / "table.csv", index_col="label")
    rae = [json.loads((run / t / EVALUATION_FILE).read_text())["test/ssim"]
           for t in good if t.startswith("RAE_")]
    assert table_csv.loc["RAE", "test/ssim mean"] == pytest.approx(sum(rae) / 2)
    assert table_csv.loc["VAE", "test/ssim n"] == 1  # the damaged seed has none
    assert ("test/mse, test/psnr, test/mse_sum, test/ssim: from a later evaluation "
            "(vae-ablations evaluate, groups reconstruction; the search's other settings) of "
            "3 of the 4 completed trials") in table
    # result.json stays what each trial reported
    assert {p.parent.name: p.read_bytes() for p in run.glob("*/result.json")} == lines


def test_a_trial_whose_evaluation_fails_is_noted_and_costs_the_others_nothing(evaluated):
    run, proc, _, _ = evaluated
    damaged = next(run.glob("VAE_seed1_*"))
    assert not (damaged / EVALUATION_FILE).exists()
    failure = json.loads((damaged / EVALUATION_FAILED_FILE).read_text())["error"]
    assert "truncated" in failure
    assert f"{damaged.name}: failed: " in proc.stdout
    assert "the evaluation of 1 of 4 trial(s) failed" in proc.stderr
    table = (run / "report" / "table.md").read_text()
    assert f"the later evaluation (vae-ablations evaluate) of {damaged.name} failed" in table
    assert "its cells are the trial's own" in table
    assert sum((t / EVALUATION_FILE).is_file() for t in run.glob("*_seed*")) == 3


def test_the_report_command_rebuilds_the_merged_table(evaluated):
    run, _, _, _ = evaluated
    table = (run / "report" / "table.md").read_text()
    (run / "report" / "table.md").unlink()
    proc = cli("-m", "engine", "report", str(run), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "report" / "table.md").read_text() == table


@pytest.fixture
def no_ray(monkeypatch):
    """Ray's start, replaced: a test of bad input fails if it is ever reached."""
    from engine.run import ray_backend

    def init(*args, **kwargs):
        raise AssertionError("Ray started although the input was bad")
    monkeypatch.setattr(ray_backend, "init", init)


@pytest.mark.parametrize("args, said", [
    (["--eval", "bogus"], "unknown metric group 'bogus'"),
    (["--eval", "none"], "--eval none: name the groups"),
    (["--eval", "reconstruction", "--rows", "UAE"], "--rows: unknown row 'UAE'"),
    (["--out", "x.json"], "--out names one trial's file"),
])
def test_bad_input_to_evaluate_run_is_one_line_before_ray_starts(searched, args, said, capsys,
                                                                 no_ray):
    assert engine_main(["evaluate", str(searched), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and said in err, err


def test_a_folder_that_is_neither_a_run_nor_a_trial_is_one_line(tmp_path, capsys, no_ray):
    assert engine_main(["evaluate", str(tmp_path), "--eval", "reconstruction"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no checkpoint" in err, err
    assert "pass a run folder or a trial folder of a run" in err, err
    assert engine_main(["evaluate", str(tmp_path), "--rows", "RAE"]) == 2
    assert "is not a run folder (no search.json)" in capsys.readouterr().err


def test_an_evaluation_of_another_epoch_than_the_trials_last_is_not_merged(tmp_path):
    """The table's row is each trial's model at its last epoch: an evaluation of an older
    checkpoint (`evaluate TRIAL/checkpoint_000000`) stays out of it, and the notes say so."""
    last = {"epoch": 3, "status": "completed", "val/mse": 0.5, "notes": {"fid": "failed: x"}}
    (tmp_path / EVALUATION_FILE).write_text(json.dumps(
        {"epoch": 2, "settings": {"metrics": ["fid"]}, "test/mse": 0.1, "notes": {}}))
    row = evaluations.merged(tmp_path, last)
    assert "test/mse" not in row and json.loads(row[evaluations.KEY]) == {
        "left_out": "it evaluated epoch 2, not the trial's last (3)"}
    (tmp_path / EVALUATION_FILE).write_text(json.dumps(
        {"epoch": 3, "settings": {"metrics": ["fid"]}, "val/mse": 0.25, "eval/fid_rec": 7.0,
         "notes": {"features": "classifier-digits"}}))
    row = evaluations.merged(tmp_path, last)
    # the evaluation's metrics over the line's; the line's note on the group it ran again goes
    assert (row["val/mse"], row["eval/fid_rec"]) == (0.25, 7.0)
    assert row["notes"] == {"features": "classifier-digits"}
