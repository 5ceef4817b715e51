"""The trial loop without Ray: per-epoch reports, checkpoints that resume exactly, divergence,
and the multi-worker batch split."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import models
from engine.host_reads import HostReads
from engine.run.trial import Diverged, Session, load_state, run_trial, train_epoch
from engine.run.types import Resources, TrialSpec

ROOT = Path(__file__).resolve().parents[1]


def params(**kw):
    p = {"label": "AE", "config": models.PRESETS["AE"].to_dict(), "seed": 3, "dataset": "digits",
         "epochs": 3, "metric": "val/mse", "mode": "min", "image_every": 1,
         "evaluation": {"metrics": ["reconstruction"]}}  # the loop, not the suite, is tested
    p.update(kw)
    return p


class Recorder:
    """A Session.report that keeps every report and loads every checkpoint."""

    def __init__(self):
        self.reports, self.states = [], []

    def __call__(self, metrics, folder):
        self.reports.append(metrics)
        self.states.append(load_state(folder) if folder else None)


def run(p, tmp_path, resume=None):
    rec = Recorder()
    run_trial(TrialSpec.from_params(p), Session(report=rec, trial_dir=str(tmp_path),
                                               resume=resume))
    return rec


def test_reports_every_epoch_and_evaluates_at_the_end(tmp_path):
    rec = run(params(), tmp_path)
    assert [r["epoch"] for r in rec.reports] == [1, 2, 3]
    assert [r["status"] for r in rec.reports] == ["running", "running", "completed"]
    last = rec.reports[-1]
    assert {"train/loss", "train/recon", "val/mse", "val/psnr", "test/mse", "test/psnr"} <= set(last)
    assert "test/mse" not in rec.reports[0]
    assert last["val/psnr"] == pytest.approx(10 * math.log10(1 / last["val/mse"]))
    assert rec.reports[-1]["val/mse"] < rec.reports[0]["val/mse"]
    # the checkpoint holds the resolved params and the epoch, loadable with weights_only
    assert rec.states[1]["epoch"] == 2 and rec.states[1]["params"]["config"]["name"] == "AE"
    assert rec.states[1]["torch_rng"].dtype == torch.uint8  # the noise stream is saved too


@pytest.mark.parametrize("preset", ["AE", "VAE", "UAE"])  # no noise, draws, sigma points
def test_resuming_from_a_checkpoint_continues_exactly(tmp_path, preset):
    p = params(label=preset, config=models.PRESETS[preset].to_dict())
    full = run(p, tmp_path / "a")
    resumed = run(p, tmp_path / "b", resume=full.states[0])  # as if killed after epoch 1
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    for a, b in zip(full.reports[1:], resumed.reports):
        for k in ("train/loss", "val/mse", "test/mse"):
            if k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k
    wa, wb = full.states[-1]["model"], resumed.states[-1]["model"]
    assert all(torch.allclose(wa[k], wb[k]) for k in wa)


def same_state(a: dict, b: dict) -> bool:
    """Two checkpoints' states equal bit for bit: weights, Adam's moments and step counts, the
    shuffling generator, the noise stream, the epoch and every metric but the timings (and
    the resumed trial's own "restored_from_epoch")."""
    def tensors(x):  # (path, tensor) for every tensor in a nested state
        if isinstance(x, torch.Tensor):
            yield (), x
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                yield from (((k, *p), t) for p, t in tensors(x[k]))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from (((i, *p), t) for p, t in tensors(v))
    keys = ("model", "optimizer", "generator", "torch_rng")
    ta, tb = list(tensors({k: a[k] for k in keys})), list(tensors({k: b[k] for k in keys}))
    untimed = [{k: v for k, v in s["metrics"].items()
                if not k.startswith("time/") and k != "restored_from_epoch"} for s in (a, b)]
    return (a["epoch"] == b["epoch"] and untimed[0] == untimed[1]
            and [p for p, _ in ta] == [p for p, _ in tb]
            and all(x.dtype == y.dtype and torch.equal(x, y) for (_, x), (_, y) in zip(ta, tb)))


@pytest.mark.parametrize("preset, fields", [
    ("AE", {}), ("VAE", {}), ("UAE", {}),  # no noise, draws, sigma points
    ("AE", {"lr_schedule": "step", "lr_step_epochs": 1}),  # a rate that changes every epoch
    # a rate that depends on the losses before it (halved at epoch 3 here): the checkpoint
    # must carry them, or the resumed epochs train at another rate (or cannot compute one)
    ("AE", {"lr_schedule": "plateau", "lr_plateau_patience": 0}),
])
def test_a_trial_resumed_after_any_epoch_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path,
                                                                                  preset, fields):
    """Killed after epoch k (any k) and resumed from that checkpoint's state, a trial ends
    with exactly the state of one never interrupted, not merely a close one: the restore
    leaves no rounding behind, so any difference a multi-worker comparison sees
    (tests/test_faults.py) is the workers' summation order, not the restore."""
    p = params(label=preset, config=models.PRESETS[preset].replace(**fields).to_dict())
    full = run(p, tmp_path / "full")
    for k in (1, 2):
        resumed = run(p, tmp_path / f"from{k}", resume=full.states[k - 1])
        assert [r["epoch"] for r in resumed.reports] == list(range(k + 1, 4))
        assert all(same_state(a, b) for a, b in zip(full.states[k:], resumed.states)), k


def test_each_epoch_trains_at_its_scheduled_rate(tmp_path):
    cfg = models.PRESETS["AE"].replace(lr=1e-3, lr_schedule="step", lr_step_epochs=2,
                                       lr_step_factor=0.1)
    rec = run(params(config=cfg.to_dict(), epochs=3), tmp_path)
    assert [r["train/lr"] for r in rec.reports] == pytest.approx([1e-3, 1e-3, 1e-4])
    # the optimizer stepped at it: the checkpoint's Adam holds the last epoch's rate
    assert [g["lr"] for g in rec.states[-1]["optimizer"]["param_groups"]] == pytest.approx(
        [1e-4, 1e-4])  # the decoder's group and the rest
    # and what Adam did with it: the same first epoch, smaller steps in the third
    const = run(params(config=cfg.replace(lr_schedule="constant").to_dict(), epochs=3),
                tmp_path / "constant")
    assert rec.reports[0]["train/loss"] == const.reports[0]["train/loss"]
    assert rec.reports[2]["train/loss"] != const.reports[2]["train/loss"]


def test_a_plateau_rate_follows_each_epochs_last_batch_loss(tmp_path):
    cfg = models.PRESETS["AE"].replace(lr=1e-3, lr_schedule="plateau", lr_plateau_patience=0)
    rec = run(params(config=cfg.to_dict(), epochs=6), tmp_path)
    losses = [r["train/loss_last_batch"] for r in rec.reports]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    expected = []
    for loss in losses:  # a live scheduler stepped with each epoch's reported loss
        expected.append(opt.param_groups[0]["lr"])
        sched.step(loss)
    rates = [r["train/lr"] for r in rec.reports]
    assert rates == pytest.approx(expected, rel=1e-12) and rates[-1] < 1e-3
    assert rec.states[-1]["monitored"] == losses  # what a resume replays
    # the epoch's last batch, not its mean
    assert all(r["train/loss_last_batch"] != r["train/loss"] for r in rec.reports)


def test_train_epoch_reports_the_loss_of_its_last_batch():
    torch.manual_seed(0)
    model = models.build("AE", (1, 8, 8))  # deterministic: no draws
    x = torch.rand(50, 1, 8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: recompute it after
    terms = train_epoch(model, opt, x, 16, torch.Generator().manual_seed(4))
    order = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    model.train()  # the same batch statistics as in training
    with torch.no_grad():
        last = model.loss(x[order[48:]])["loss"].item()  # 16, 16, 16, then 2 examples
    assert terms["loss_last_batch"] == pytest.approx(last, rel=1e-6)


def test_restored_at_the_final_checkpoint_trains_nothing_and_reports_only_if_set_aside(
        tmp_path):
    full = run(params(), tmp_path / "a")
    # restored by Tune from its final checkpoint: Tune's result.json already ends with it
    assert run(params(), tmp_path / "b", resume=full.states[-1]).reports == []
    # continued from the newest checkpoint in its folder (a resume's repair), whose earlier
    # result lines were set aside: it reports the completed line once
    again = run(params(), tmp_path / "c", resume={**full.states[-1], "from_folder": True})
    assert again.reports == [full.reports[-1]] and again.reports[0]["status"] == "completed"
    assert again.states == [None]


def test_each_checkpoint_holds_the_trials_own_line_of_every_epoch_so_far(tmp_path):
    """Beside its state every checkpoint keeps the result line of each epoch up to it, as the
    trial reported it (the driver that writes result.json may die holding some); a trial
    restored from a checkpoint carries the earlier lines on into its next checkpoints."""
    p = params(epochs=5, checkpoint_every=2)
    full = run(p, tmp_path / "a")
    assert [s["epoch"] if s else None for s in full.states] == [None, 2, None, 4, 5]
    for state in filter(None, full.states):
        assert [x["epoch"] for x in state["lines"]] == list(range(1, state["epoch"] + 1))
        for line in state["lines"]:  # the reported values, through JSON
            assert line["val/mse"] == full.reports[line["epoch"] - 1]["val/mse"]
    resumed = run(p, tmp_path / "b", resume=full.states[1])  # killed after epoch 2
    assert [x["epoch"] for x in resumed.states[1]["lines"]] == [1, 2, 3, 4]
    assert resumed.states[1]["lines"][:2] == full.states[1]["lines"]
    assert resumed.states[1]["lines"][2]["restored_from_epoch"] == 2


def test_a_resume_fills_the_epochs_a_killed_driver_never_wrote_from_the_checkpoint(tmp_path):
    """kill -9 of the driver alone: Tune's result.json (written by the driver) ended at epoch
    6 while the trial had reported 7 and 8 and checkpointed 9 (issue 30's probe). The resume's
    merge takes 1-6 from the driver's lines, 7-8 from the checkpoint's, and 9 on from the new
    run: every epoch exactly once, in order, and progress.csv row for row."""
    import csv
    from engine.run.resume import BEFORE_RESUME, merge_results
    from engine.run.trial import LINES_FILE

    def line(epoch, source):
        return {"epoch": epoch, "val/mse": 1.0 / epoch, "source": source}
    folder = tmp_path / "RAE_seed0"
    for name, epochs in (("checkpoint_000001", range(1, 7)), ("checkpoint_000002",
                                                               range(1, 10))):
        (folder / name).mkdir(parents=True)
        (folder / name / LINES_FILE).write_text(
            "".join(json.dumps(line(e, "trial")) + "\n" for e in epochs))
    (folder / BEFORE_RESUME).write_text(
        "".join(json.dumps(line(e, "driver")) + "\n" for e in range(1, 7)) + '{"epoch": 7, "va')
    (folder / "result.json").write_text(
        "".join(json.dumps(line(e, "resume")) + "\n" for e in range(9, 13)))
    (folder / "progress.csv").write_text("epoch,val/mse,source\n")
    merge_results(folder)
    merged = [json.loads(x) for x in (folder / "result.json").read_text().splitlines()]
    assert [x["epoch"] for x in merged] == list(range(1, 13))
    assert [x["source"] for x in merged] == ["driver"] * 6 + ["trial"] * 2 + ["resume"] * 4
    with open(folder / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert not (folder / BEFORE_RESUME).exists()


def test_newest_state_takes_the_latest_epoch_and_skips_a_half_written_checkpoint(tmp_path):
    from engine.run.trial import newest_state
    full = run(params(), tmp_path / "a")
    for name, state in (("checkpoint_000007", full.states[0]),
                        ("checkpoint_000002", full.states[1])):
        (tmp_path / "t" / name).mkdir(parents=True)
        torch.save(state, tmp_path / "t" / name / "state.pt")
    (tmp_path / "t" / "checkpoint_000009").mkdir()
    (tmp_path / "t" / "checkpoint_000009" / "state.pt").write_bytes(b"PK\x03\x04trunc")
    assert newest_state(str(tmp_path / "t"))["epoch"] == 2  # by epoch, not folder name
    assert newest_state(str(tmp_path / "empty")) is None


def test_a_nan_loss_ends_the_trial_as_diverged_with_its_last_finite_metrics(tmp_path):
    cfg = models.PRESETS["AE"].replace(lr=1e30).to_dict()  # the first Adam steps blow it up
    rec = run(params(config=cfg, epochs=5), tmp_path)
    last = rec.reports[-1]
    assert last["status"] == "diverged" and len(rec.reports) <= 5
    assert rec.states[-1] is None  # no checkpoint of a diverged state
    assert last["val/mse"] == math.inf  # the stopping metric at its worst, for ASHA/Optuna
    if len(rec.reports) > 1:  # the other metrics are those of the last finite epoch
        assert last["diverged/val/mse"] == rec.reports[-2]["val/mse"]
        assert last["train/loss"] == rec.reports[-2]["train/loss"]
        assert last["diverged_at_epoch"] == rec.reports[-2]["epoch"] + 1
    assert all(math.isfinite(v) for k, v in last.items()
               if isinstance(v, float) and k != "val/mse")


def test_train_epoch_raises_before_stepping_on_a_nan(tmp_path):
    model = models.build("AE", (1, 8, 8))
    opt = model.make_optimizer()
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(8, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(Diverged):
        train_epoch(model, opt, x, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_nan_in_a_later_batch_leaves_the_parameters_of_the_steps_before_it():
    """The fused optimizer skips every step from the first non-finite loss on, on the device:
    the parameters are those of the finite steps before it, and Diverged names its batch."""
    torch.manual_seed(0)
    model = models.build("AE", (1, 8, 8))
    twin = copy.deepcopy(model)
    opt, twin_opt = model.make_optimizer(), twin.make_optimizer()
    assert opt.param_groups[0]["fused"]  # the path that does not read the loss a batch
    x = torch.rand(24, 1, 8, 8)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    x[order[8 + 5], 0, 0, 0] = float("nan")  # in the second of three batches of 8
    with pytest.raises(Diverged, match="starting at example 8"):
        train_epoch(model, opt, x, 8, torch.Generator().manual_seed(3))
    twin.train()
    twin_opt.zero_grad()
    twin.loss(x[order[:8]])["loss"].backward()  # the one finite step
    twin_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(twin.parameters(), model.parameters()))
    assert torch.equal(opt.state_dict()["state"][0]["step"], torch.tensor(1.0))


def test_an_error_mid_epoch_leaves_no_skip_flag_on_the_optimizer():
    """train_epoch hands fused Adam its found-inf flag for the epoch; an exception in a
    batch (here the second) must not leave it there, or every later plain step of that
    optimizer would be skipped whenever the flag was 1."""
    torch.manual_seed(0)
    model = models.build("AE", (1, 8, 8))
    opt = model.make_optimizer()
    calls = []

    class Net(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            if len(calls) == 2:
                raise RuntimeError("out of memory")
            return model(x)
    net = Net()
    with pytest.raises(RuntimeError, match="out of memory"):
        train_epoch(net, opt, torch.rand(24, 1, 8, 8), 8, torch.Generator().manual_seed(0))
    assert calls == [8, 8] and getattr(opt, "found_inf", None) is None


def test_host_reads_counts_the_reads_that_would_sync_a_gpu_and_not_arithmetic():
    x = torch.tensor([0.0, 2.0, -1.0])
    with HostReads() as reads:
        y = (x * 2 + 1).exp().sum()  # stays on the device
        y.item(), float(x[1]), bool(x[0] > 0), x.nonzero()
    assert reads.ops == {"_local_scalar_dense": 3, "nonzero": 1}


@pytest.mark.parametrize("preset", list(models.PRESETS))
def test_a_training_batch_reads_nothing_back_from_the_device(preset):
    """Every preset's epoch reads its terms and the divergence flag once, at its end (by
    .tolist(), outside the dispatcher): the count of reads is the same for 2 batches as for 6,
    and zero (the loop before this change read 4-6 values a batch)."""
    counts = []
    for n in (16, 48):
        torch.manual_seed(0)
        model = models.build(models.PRESETS[preset].replace(batch_size=8), (1, 8, 8))
        opt = model.make_optimizer()
        x = torch.rand(n, 1, 8, 8)
        with HostReads() as syncs:
            train_epoch(model, opt, x, 8, torch.Generator().manual_seed(0))
        counts.append(syncs.count)
    assert counts == [0, 0]


def test_two_workers_split_each_batch_and_average_over_all_examples():
    """Rank r takes rows r::W of every batch; the all-reduced means equal one worker's mean
    over the whole batches (the model here has no batch statistics: an MLP AE)."""
    torch.manual_seed(0)
    model = models.build("AE", (1, 8, 8))
    x = torch.rand(40, 1, 8, 8)
    seen = {0: [], 1: []}
    totals = []

    class Spy(torch.nn.Module):
        def __init__(self, rank):
            super().__init__()
            self.rank, self.m = rank, model

        def forward(self, b):
            seen[self.rank].append(b.clone())
            return self.m.loss(b)

    class NoStep:
        def zero_grad(self, set_to_none=True):
            model.zero_grad()

        def step(self):
            pass

    def reduce_into(t):  # a stand-in all_reduce: remember, add the other rank later
        totals.append(t.clone())

    for rank in (0, 1):
        train_epoch(Spy(rank), NoStep(), x, 16, torch.Generator().manual_seed(1), rank, 2,
                    reduce_into)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    for i, start in enumerate(range(0, 40, 16)):
        idx = order[start:start + 16]
        assert torch.equal(seen[0][i], x[idx[0::2]]) and torch.equal(seen[1][i], x[idx[1::2]])
    # the per-epoch packs (term sums, last batch's loss x count, count, its count) of both
    # ranks add to the whole data's count and to the last batch's (40 - 32 = 8 examples)
    packs = [t for t in totals if t.dtype == torch.float64]
    assert packs[0][-2] + packs[1][-2] == 40 and packs[0][-1] + packs[1][-1] == 8
    with torch.no_grad():
        last = order[32:]
        expected = (model.loss(x[last[0::2]])["loss"] * 4
                    + model.loss(x[last[1::2]])["loss"] * 4).item()
    assert (packs[0][-3] + packs[1][-3]).item() == pytest.approx(expected, rel=1e-6)


# --- the ex-post density at a trial's end: fitted once, by the evaluation -------------------

def test_the_final_evaluations_density_samples_are_the_boards_and_fitted_once(tmp_path,
                                                                              monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from models import density
    fits = []
    gmm = density.DENSITIES["gmm"]
    monkeypatch.setitem(density.DENSITIES, "gmm",
                        lambda *a, **k: fits.append(a[1].gmm_components) or gmm(*a, **k))
    p = params(epochs=1, evaluation={"metrics": ["fid"], "densities": ["prior", "gmm10"],
                                     "fid_samples": 300})
    rec = run(p, tmp_path)
    assert "eval/fid_sample_gmm10" in rec.reports[-1]
    assert fits == [10]  # the evaluation's GMM-10; the board fitted none of its own
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {"samples/prior", "samples/gmm10"} <= set(acc.Tags()["images"])


class _Images:
    """A SummaryWriter's add_image, kept."""

    def __init__(self):
        self.images = {}

    def __call__(self, tag, image, step):
        self.images[tag] = image


def test_the_board_decodes_the_drawn_latents_and_fits_only_when_none_were_drawn(tmp_path,
                                                                                monkeypatch):
    from torchvision.utils import make_grid

    from engine.data import load_dataset
    from engine.run.spec import TrialSpec
    from engine.eval.tensorboard import GRID, TrialBoard
    data = load_dataset("digits")
    p = params()
    model = models.build(models.resolve(p["config"]), data.image_shape).eval()
    board = TrialBoard(str(tmp_path), TrialSpec.from_params(p), data, 1)
    board.writer.add_image = kept = _Images()
    z = torch.randn(300, model.cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(models, "fit_density", lambda *a, **k: pytest.fail("fitted again"))
    board._density_samples(model, 1, {"prior": z, "gmm10": z})
    assert set(kept.images) == {"samples/gmm10"}  # the prior's grid is _images' own
    with torch.no_grad():
        decoded = model.decode(z[:2 * GRID]).clamp(0, 1)  # (32, 1, 8, 8)
    # each 8x8 digit enlarged 8x by repeating its pixels (nearest), as the board draws it
    enlarged = decoded.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    expected = make_grid(enlarged, nrow=GRID)
    assert torch.equal(kept.images["samples/gmm10"], expected)
    # nothing fitted drawn (an evaluation without FIDs): the config's density, fitted here
    fitted = []

    class Fitted:
        def sample(self, n, seed):
            fitted.append(n)
            return z[:n]
    monkeypatch.setattr(models, "fit_density", lambda *a, **k: Fitted())
    kept.images.clear()
    board._density_samples(model, 1, {"prior": z})
    assert fitted == [2 * GRID] and set(kept.images) == {f"samples/{model.cfg.density}"}
    assert torch.equal(kept.images[f"samples/{model.cfg.density}"], expected)
    board.close()


def test_a_trial_runs_its_torch_and_blas_threads_at_its_cpu_allotment():
    import threadpoolctl
    from engine.run.ray_backend import cpu_threads
    before = torch.get_num_threads()
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas  # numpy's OpenBLAS (or MKL), whose pool Ray's variable may not reach
    try:
        for cpu, n in ((1.0, 1), (0.5, 1), (2.0, 2)):
            with cpu_threads(SimpleNamespace(resources=Resources(cpu=cpu))):
                assert torch.get_num_threads() == n
                assert {p["num_threads"] for p in threadpoolctl.threadpool_info()
                        if p["user_api"] == "blas"} == {n}
    finally:
        torch.set_num_threads(before)


def test_by_default_a_trial_checkpoints_by_time_and_always_at_its_last_epoch(tmp_path,
                                                                            monkeypatch):
    """checkpoint_seconds: the first epoch to end that long after the last checkpoint writes
    one; a fake clock that advances 100 s an epoch, against 250 s, checkpoints epochs 3, 6
    and the last (7). No real time is measured."""
    import engine.run.trial as trial
    now = [0.0]

    def clock():
        return now[0]

    real_epoch = trial.train_epoch

    def epoch_of_100_s(*a, **k):
        now[0] += 100.0
        return real_epoch(*a, **k)

    monkeypatch.setattr(trial, "_clock", clock)
    monkeypatch.setattr(trial, "train_epoch", epoch_of_100_s)
    rec = run(params(epochs=7, checkpoint_every=0, checkpoint_seconds=250.0), tmp_path)
    assert [s["epoch"] for s in rec.states if s] == [3, 6, 7]
    assert len(rec.reports) == 7  # every epoch still reports its line


@pytest.mark.parametrize("text, cadence", [("1", (1, 0.0)), ("5", (5, 0.0)),
                                           ("90s", (0, 90.0)), ("5m", (0, 300.0)),
                                           ("1.5h", (0, 5400.0))])
def test_checkpoint_every_takes_epochs_or_a_duration(text, cadence):
    from engine.run.cli import checkpoint_cadence
    assert checkpoint_cadence(text) == cadence


@pytest.mark.parametrize("text", ["0", "-2", "0s", "infm", "5x", "m", ""])
def test_a_bad_checkpoint_cadence_is_refused_saying_what_it_takes(text):
    import argparse
    from engine.run.cli import checkpoint_cadence
    with pytest.raises(argparse.ArgumentTypeError, match="number of epochs >= 1"):
        checkpoint_cadence(text)


def test_the_default_cadence_is_five_minutes_and_a_run_from_before_it_every_epoch(tmp_path):
    import sys
    from engine.run.cli import parse_args
    from engine.run.spec import TrialSpec
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    assert parse_args(SEARCH, []).checkpoint_every == (0, 300.0)
    old = {k: v for k, v in params().items() if not k.startswith("checkpoint")}
    spec = TrialSpec.from_params(old)
    assert (spec.checkpoint_every, spec.checkpoint_seconds) == (1, 0.0)


def test_a_trial_saves_the_pictures_of_its_row_for_the_reports_figure(tmp_path):
    """qualitative.npz: the test inputs as they are stored, their reconstructions, samples
    decoded from the evaluation's own draws (and the prior's), and two slerp paths whose
    ends decode the encoder means of test images 0, 1 and 2, 3."""
    import numpy as np

    from engine.data import load_dataset
    from engine.eval.metrics.latent import slerp
    from engine.eval.qualitative import FILE, N
    rec = run(params(epochs=1, evaluation={"metrics": ["fid"], "fid_samples": 300,
                                           "densities": ["gmm10"]}), tmp_path)
    assert rec.reports[-1]["status"] == "completed"
    saved = dict(np.load(tmp_path / FILE))
    data = load_dataset("digits")
    assert set(saved) == {"inputs", "reconstructions", "samples/prior", "samples/gmm10",
                          "interpolation"}
    test = data.test.images[:N]  # (N, 1, 8, 8): digits' 17 levels k/16, held as floats

    def codes(x):
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(saved["inputs"], codes(models.float_images(test)))
    model = models.build("AE", (1, 8, 8))
    model.load_state_dict(rec.states[-1]["model"])
    model.eval()
    with torch.no_grad():
        x = models.float_images(test)
        assert np.array_equal(saved["reconstructions"], codes(model.reconstruct(x)))
        mu = model.encode(models.float_images(data.test.images[:4]))[0]
        ends = codes(model.decode(mu))
        path = saved["interpolation"]
        assert path.shape == (2 * N, 8, 8, 1)
        for got, want in ((path[0], ends[0]), (path[N - 1], ends[1]), (path[N], ends[2]),
                          (path[2 * N - 1], ends[3])):
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # slerp's rounding
        mid = codes(model.decode(slerp(mu[:1], mu[1:2], torch.tensor([1 / (N - 1)]))))
        assert np.abs(path[1].astype(int) - mid[0].astype(int)).max() <= 1
    assert saved["samples/gmm10"].shape == (N, 8, 8, 1)


# --- --epochs auto: a trial that ends at its plateau (engine/run/stopper.py) ---

def auto_params(**kw):
    """A small AE that plateaus on the digits within the cap: at epoch 13 of 20 (seed 0)."""
    cfg = models.PRESETS["AE"].replace(lr=1e-2, latent_dim=2).to_dict()
    return params(**{"config": cfg, "seed": 0, "epochs": 20, "budget": "auto",
                     "min_epochs": 3, "image_every": 100, **kw})


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    return run(auto_params(), tmp_path_factory.mktemp("auto"))


def test_an_auto_budget_ends_at_the_plateau_completed_and_evaluated(auto_run):
    reports = auto_run.reports
    n = len(reports)
    assert 3 < n < 20 and [r["epoch"] for r in reports] == list(range(1, n + 1))
    assert [r["status"] for r in reports] == ["running"] * (n - 1) + ["completed"]
    assert all(r["end_reason"] is None for r in reports[:-1])  # a column in every line
    assert reports[-1]["end_reason"].startswith(f"plateau at epoch {n} (val/mse")
    assert "test/mse" in reports[-1] and "test/mse" not in reports[-2]
    # the rule replayed on the reported lines stops there first; the report's criterion holds
    from engine.run.stopper import PlateauStopper, still_moving
    replay = PlateauStopper("val/mse", min_epochs=3, max_epochs=20)
    assert [replay("t", r) for r in reports] == [False] * (n - 1) + [True]
    curve = {"val/mse": [r["val/mse"] for r in reports]}
    assert still_moving(curve, "val/mse") == {}
    # its last epoch is checkpointed, with the history a resume restores the rule from
    state = auto_run.states[-1]
    assert state["epoch"] == n and state["plateau"]["val/mse"] == curve["val/mse"]


def test_an_auto_budget_that_never_plateaus_completes_at_its_cap(tmp_path):
    rec = run(auto_params(epochs=4, min_epochs=4), tmp_path)  # still improving at epoch 4
    assert [r["status"] for r in rec.reports] == ["running"] * 3 + ["completed"]
    assert rec.reports[-1]["end_reason"].startswith("max epochs 4 reached, no plateau")


def test_an_auto_trial_resumed_decides_its_plateau_as_an_uninterrupted_one(auto_run, tmp_path):
    """Killed after epoch k and resumed from its checkpoint, the trial ends at the same epoch
    with the same state and reason; also from a checkpoint without the history (written
    before the checkpoint held it), whose history then comes from the result lines."""
    full, n = auto_run, len(auto_run.reports)
    resumed = run(auto_params(), tmp_path / "a", resume=full.states[n - 3])
    assert [r["epoch"] for r in resumed.reports] == [n - 1, n]
    assert resumed.reports[-1]["end_reason"] == full.reports[-1]["end_reason"]
    assert same_state(full.states[-1], resumed.states[-1])
    # no history in the checkpoint: read from result.json, as Tune wrote it in the trial folder
    trial = tmp_path / "b"
    trial.mkdir()
    (trial / "result.json").write_text("".join(
        json.dumps(r) + "\n" for r in full.reports[:n - 4]))
    old = {k: v for k, v in full.states[n - 5].items() if k != "plateau"}
    again = run(auto_params(), trial, resume=old)
    assert [r["epoch"] for r in again.reports] == list(range(n - 3, n + 1))
    assert same_state(full.states[-1], again.states[-1])
    # and none at all: said, not guessed
    (trial / "result.json").write_text("")
    with pytest.raises(ValueError, match="holds no metric history"):
        run(auto_params(), trial, resume=old)


def test_an_auto_trial_restored_at_its_plateau_trains_nothing(auto_run, tmp_path):
    assert run(auto_params(), tmp_path, resume=auto_run.states[-1]).reports == []


def test_an_auto_budget_refuses_a_schedule_over_the_total_epochs(tmp_path):
    cfg = models.PRESETS["AE"].replace(lr_schedule="cosine").to_dict()
    with pytest.raises(ValueError, match="cosine anneals over the total epochs"):
        run(auto_params(config=cfg), tmp_path)


def test_every_worker_ends_at_rank_0s_plateau(monkeypatch, tmp_path):
    """With several workers (DDP) the plateau is rank 0's decision, which every worker takes
    (one all-reduce), so none goes on to an all-reduce the others never make. Two workers in
    threads here (each its own model: nothing syncs them), the first one's rule made to stop
    at epoch 5, the second one's at epoch 3."""
    import threading
    import engine.run.trial as trial_module

    class Stubborn(trial_module.PlateauStopper):
        def decide(self, history):
            at = 5 if threading.current_thread().name == "rank0" else 3
            return f"plateau at epoch {at} (here)" if len(history["val/mse"]) == at else None
    monkeypatch.setattr(trial_module, "PlateauStopper", Stubborn)
    barrier, slots = threading.Barrier(2, timeout=60), [None, None]

    def all_reduce_of(rank):
        def all_reduce(t):
            slots[rank] = t.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            t.copy_(total)
        return all_reduce
    recs, errors = [Recorder(), Recorder()], []

    def worker(rank):
        try:
            run_trial(TrialSpec.from_params(auto_params()),
                      Session(report=recs[rank], trial_dir=str(tmp_path), rank=rank, world=2,
                              all_reduce=all_reduce_of(rank)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            barrier.abort()
    threads = [threading.Thread(target=worker, args=(r,), name=f"rank{r}") for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    epochs = [[r["epoch"] for r in rec.reports] for rec in recs]
    assert epochs == [[1, 2, 3, 4, 5]] * 2
    assert [rec.reports[-1]["status"] for rec in recs] == ["completed", "completed"]
    assert recs[0].reports[-1]["end_reason"] == "plateau at epoch 5 (here)"
    assert "test/mse" in recs[0].reports[-1]  # evaluated by rank 0


def test_an_early_stopping_trial_ends_past_its_best_while_its_variance_still_moves(
        monkeypatch, tmp_path):
    """Search.early_stopping reaches the trial's rule (params "early_stopping"): an Iso-I trial
    (its decoder variance, train/sigma_x2, the MLE of the training residual, is watched) whose
    validation error is made to rise after epoch 4 ends past its best, completed and evaluated,
    where the same trial without it goes on to its cap."""
    import engine.run.trial as trial_module
    cfg = models.PRESETS["Iso-I"].replace(lr=1e-2, latent_dim=2).to_dict()
    for early in (True, False):
        values = iter([1.0, 0.8, 0.7, 0.6] + [0.6 + 0.03 * k for k in range(1, 20)])
        monkeypatch.setattr(trial_module, "reconstruction_mse", lambda model, val: next(values))
        rec = run(auto_params(config=cfg, epochs=9, early_stopping=early), tmp_path / str(early))
        reports = rec.reports
        assert all(r["train/sigma_x2"] for r in reports)
        if early:  # past its best at epochs 5, 6 and 7 (window 1 up to 9 epochs)
            assert [r["epoch"] for r in reports] == list(range(1, 8))
            assert reports[-1]["end_reason"] == (
                "past its best at epoch 7 (val/mse: the mean of epochs 7 13% worse than that "
                "of epochs 4, as at the 2 epochs before)")
            assert reports[-1]["status"] == "completed" and "test/mse" in reports[-1]
        else:
            assert len(reports) == 9 and reports[-1]["end_reason"].startswith("max epochs 9")
