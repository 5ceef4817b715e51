"""TensorBoard's HParams tab as a researcher sees it (tests/tb_hparams.py reads it the way the
plugin serves it): a session per trial from its start, a group per row that aggregates the
seeds, every metric once, the end status of completed, diverged, errored and stopped trials,
and two studies under one logdir each with its own columns and metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import models
from engine.data import load_dataset
from engine.eval.tensorboard import TrialBoard, board_dir, end_session
from engine.run.spec import TrialSpec

sys.path.insert(0, str(Path(__file__).parent))
from tb_hparams import read_hparams  # noqa: E402
from test_trial import params  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trial(logdir, run, search, label, seed, digits, epochs, metrics, end=None, data=None):
    """A trial of `run` that reports `metrics(epoch)` for epochs 1..`epochs`, then ends as
    `end` ("completed", "diverged", "error", or None: stopped where it was)."""
    p = params(label=label, seed=seed, search=search, data=data)
    model = models.build(models.resolve(p["config"]), digits.image_shape).eval()
    trial_dir = logdir / run / f"{label}_seed{seed}_0000{seed}"
    spec = TrialSpec.from_params(p)
    events = board_dir(str(trial_dir), spec)  # where a search's trial writes them
    board = TrialBoard(str(trial_dir), spec, digits, 1, events)
    for epoch in range(1, epochs + 1):
        board.epoch(model, {"epoch": epoch, **metrics(epoch)}, epoch, final=False)
    if end in ("completed", "diverged"):
        board.end(end)
    board.close()
    if end == "error":  # the driver's, from outside the trial's process
        end_session(events, "error")


def test_hparams_groups_seeds_by_row_and_keeps_two_studies_apart(tmp_path, digits):
    def study_a(epoch):  # reconstruction and FIDs at the last epoch
        return {"val/mse": 1.0 / epoch, **({"test/mse": 0.2, "eval/fid_rec": 30.0}
                                           if epoch == 3 else {})}

    def study_b(epoch):  # another study's metrics
        return {"val/mse": 2.0 / epoch, **({"eval/latent_var": 57.0} if epoch == 2 else {})}

    a, b = "ablation_uae-digits-1", "codebook-digits-1"
    _trial(tmp_path, a, "ablation_uae", "UAE", 0, digits, 3, study_a, "completed")
    _trial(tmp_path, a, "ablation_uae", "UAE", 1, digits, 3, lambda e: {
        **study_a(e), "val/mse": 3.0 / e}, "completed")
    _trial(tmp_path, a, "ablation_uae", "VAE", 0, digits, 2, study_a, "diverged")
    _trial(tmp_path, a, "ablation_uae", "RAE", 0, digits, 1, study_a, None)  # stopped (ASHA)
    _trial(tmp_path, a, "ablation_uae", "AE", 0, digits, 1, study_a, "error")
    _trial(tmp_path, b, "codebook", "UAE", 0, digits, 2, study_b, "completed")
    _trial(tmp_path, b, "codebook", "UT-VAE*-full-Σ", 0, digits, 2, study_b, "completed",
           data={"noise": {"partition": "spatial", "variance": 0.1}})

    experiment, groups = read_hparams(tmp_path)
    hp = experiment["hparams"]
    # one experiment for both studies: every study's own metrics, each once (no final/*)
    assert {"val/mse", "test/mse", "eval/fid_rec", "eval/latent_var"} <= set(
        experiment["metrics"])
    assert not [m for m in experiment["metrics"] if m.startswith("final/")]
    # the row's label as a discrete domain (a filter of checkboxes), the search and run too
    # (in ASCII: TensorBoard escapes other characters in its filters, see ascii_text)
    assert sorted(hp["label"]) == ["AE", "RAE", "UAE", "UT-VAE*-full-Sigma", "VAE"]
    assert sorted(hp["search"]) == ["ablation_uae", "codebook"]
    assert sorted(hp["run"]) == sorted([a, b]) and hp["dataset"] == ["digits"]
    assert "seed" in hp and "beta" in hp and "decoder_variance" in hp
    # a group per (run, row): the two seeds of ablation_uae's UAE aggregated (their mean),
    # codebook's UAE apart
    assert set(groups) == {f"{a}/UAE", f"{a}/VAE", f"{a}/RAE", f"{a}/AE", f"{b}/UAE",
                           f"{b}/UT-VAE*-full-Σ"}
    # the tab's filters with every value checked keep every row (a "Σ" or a data option too)
    assert set(read_hparams(tmp_path, filters=True)[1]) == set(groups)
    noisy = groups[f"{b}/UT-VAE*-full-Σ"]["hparams"]
    assert noisy["label"] == "UT-VAE*-full-Sigma" and "spatial" in noisy["data"]
    uae = groups[f"{a}/UAE"]
    assert len(uae["sessions"]) == 2
    assert uae["metrics"]["val/mse"] == pytest.approx((1.0 / 3 + 3.0 / 3) / 2)
    assert uae["metrics"]["eval/fid_rec"] == pytest.approx(30.0)
    assert groups[f"{b}/UAE"]["metrics"] == pytest.approx({"val/mse": 1.0,
                                                            "eval/latent_var": 57.0})
    assert groups[f"{b}/UAE"]["hparams"]["search"] == "codebook"

    def only(group):
        (session,) = groups[group]["sessions"].values()
        return session
    assert {s["status"] for s in uae["sessions"].values()} == {"SUCCESS"}
    assert only(f"{a}/VAE")["status"] == "FAILURE"  # diverged
    assert only(f"{a}/AE")["status"] == "FAILURE"  # an error, ended by the driver
    # stopped early: no end (TensorBoard's "unknown"), and its latest value, at its epoch
    assert only(f"{a}/RAE")["status"] == "UNKNOWN"
    assert only(f"{a}/RAE")["metrics"]["val/mse"] == (1, pytest.approx(1.0))
    # a running trial's session is there from its start, with the values of its epochs so far
    assert only(f"{a}/VAE")["metrics"]["val/mse"] == (2, pytest.approx(0.5))


@pytest.mark.parametrize("files_before", [0, 9, 99])
def test_a_resumed_trial_is_one_session_with_its_first_start_and_its_final_status(
        tmp_path, digits, monkeypatch, files_before):
    # files_before: event files this process opened before; at 9 (or 99) the resumed trial's
    # file, opened within the same second, was named "...<pid>.10" and sorted before the
    # first's "...<pid>.9", so TensorBoard read the resumed epochs first (a CI failure)
    from tensorboard.summary.writer import event_file_writer
    monkeypatch.setattr(event_file_writer, "_global_uid",
                        event_file_writer.AtomicCounter(files_before))
    p = params(label="UAE", seed=0, search="s")
    model = models.build(models.resolve(p["config"]), digits.image_shape).eval()
    trial_dir = tmp_path / "s-digits-1" / "UAE_seed0_00000"
    first = TrialBoard(str(trial_dir), TrialSpec.from_params(p), digits, 1)
    for epoch in (1, 2, 3):
        first.epoch(model, {"val/mse": 1.0 / epoch}, epoch, final=False)
    first.close()  # killed after epoch 3, its checkpoint at epoch 2: resumed at 3
    again = TrialBoard(str(trial_dir), TrialSpec.from_params(p), digits, 3)
    for epoch in (3, 4):
        again.epoch(model, {"val/mse": 0.1 / epoch}, epoch, final=False)
    again.end("completed")
    again.close()
    _, groups = read_hparams(tmp_path)
    (session,) = groups["s-digits-1/UAE"]["sessions"].values()
    assert session["status"] == "SUCCESS"
    assert session["metrics"]["val/mse"] == (4, pytest.approx(0.1 / 4))


@pytest.mark.parametrize("text,ascii", [
    ("UT-VAE*-full-Σ", "UT-VAE*-full-Sigma"), ("VAE-σx²=1", "VAE-sigmax^2=1"),
    ("VAE-fixed-γ", "VAE-fixed-gamma"), ("ε=10⁻⁶", "epsilon=10^-6"), ("x₂²", "x_2^2"),
    ("λ·κ−1", "lambda.kappa-1"), ('a"b\\c', "a'b/c"), ("Janjoš", "Janjos"), ("AE", "AE")])
def test_hparams_text_is_spelled_in_ascii_that_tensorboard_does_not_escape(text, ascii):
    from google.protobuf import json_format, struct_pb2

    from engine.eval.tensorboard import ascii_text
    assert ascii_text(text) == ascii
    # what the plugin does to a value before it offers it as a filter: unchanged now
    value = struct_pb2.Value(string_value=ascii_text(text))
    assert json_format.MessageToJson(value)[1:-1] == ascii


def test_an_errored_trial_that_resume_continues_ends_as_its_continuation_does(tmp_path,
                                                                            digits):
    """The driver's "failure" of an errored trial is a file of its own, which --resume removes
    when it continues the trial (engine/run/resume.py): TensorBoard keeps a folder's first
    end status, so the failure would otherwise stand over the success that follows."""
    from engine.run.resume import _forget_failure
    p = params(label="UAE", seed=0, search="s")
    model = models.build(models.resolve(p["config"]), digits.image_shape).eval()
    trial_dir = tmp_path / "s-digits-1" / "UAE_seed0_00000"
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps(p))  # as Tune writes it
    spec = TrialSpec.from_params(p)
    events = board_dir(str(trial_dir), spec)
    board = TrialBoard(str(trial_dir), spec, digits, 1, events)
    board.epoch(model, {"val/mse": 1.0}, 1, final=False)
    board.close()
    end_session(events, "error")
    _, groups = read_hparams(tmp_path)
    assert [s["status"] for s in groups["s-digits-1/UAE"]["sessions"].values()] == ["FAILURE"]
    _forget_failure(trial_dir)  # what --resume does to the trials it continues
    again = TrialBoard(str(trial_dir), TrialSpec.from_params(p), digits, 2, events)
    again.epoch(model, {"val/mse": 0.5}, 2, final=False)
    again.end("completed")
    again.close()
    _, groups = read_hparams(tmp_path)
    assert [s["status"] for s in groups["s-digits-1/UAE"]["sessions"].values()] == ["SUCCESS"]


@pytest.mark.parametrize("label, seed, folder, sampled, names", [
    ("RAE", 0, "RAE_seed0_71b2e_00004", False, ("RAE", "seed0")),
    ("UT-VAE*-full-Σ", 2, "UT-VAE_-full-_seed2_71b2e_00001", False,
     ("UT-VAE*-full-Sigma", "seed2")),  # spelled as the HParams label column spells it
    ("UAE", 0, "UAE_seed0_3f0aa_00007", True, ("UAE", "seed0", "00007")),
    ("a/b", 1, "a_b_seed1_3f0aa_00000", False, ("a-b", "seed1")),  # never a deeper folder
    ("..", 1, "___seed1_3f0aa_00000", False, ("_..", "seed1")),  # never the run's parent
])
def test_a_trials_board_is_its_row_and_seed_under_the_runs_tensorboard(
        tmp_path, label, seed, folder, sampled, names):
    """Issue 31: TensorBoard names a run by its events folder relative to the logdir, so
    `tensorboard --logdir <run>/tensorboard` lists `<row>/seed<k>` (and a sampled search's
    trials of one row and seed apart, by their trial numbers)."""
    trial_dir = tmp_path / "run" / folder
    got = board_dir(str(trial_dir), SimpleNamespace(label=label, seed=seed, sampled=sampled))
    assert Path(got) == tmp_path.joinpath("run", "tensorboard", *names)


def test_a_resumed_board_waits_for_the_next_second_but_not_for_a_clock_far_ahead(
        tmp_path, monkeypatch, capsys):
    from engine.eval import tensorboard as tb
    clock = {"now": 1_800_000_000.25}
    slept = []

    def sleep(s):
        slept.append(s)
        clock["now"] += s
    # the module's clock alone (patching time.time itself would move any other thread's)
    monkeypatch.setattr(tb, "time", SimpleNamespace(time=lambda: clock["now"],
                                                          sleep=sleep))
    tb.wait_to_sort_last(str(tmp_path / "none"))  # no folder yet: nothing to sort after
    (tmp_path / "events.out.tfevents.1800000000.host.7.9").write_bytes(b"")
    tb.wait_to_sort_last(str(tmp_path))  # the same second: on to the next
    assert slept == [pytest.approx(0.75)] and clock["now"] >= 1_800_000_001
    (tmp_path / "events.out.tfevents.1800003600.host.8.0").write_bytes(b"")  # an hour ahead
    tb.wait_to_sort_last(str(tmp_path))
    assert len(slept) == 1 and "ahead of this node's clock" in capsys.readouterr().err
