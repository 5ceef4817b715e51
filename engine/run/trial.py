"""One trial: one configuration and one seed, trained for the search's budget.

Every epoch it reports the mean of each training term (`train/<term>`), the validation
reconstruction error (`val/mse`, `val/psnr`, the metric ASHA stops on) and its time, and
saves a checkpoint when one is due (_checkpoint_due); the last epoch adds the evaluation
(`test/...`) and its checkpoint. With --epochs auto (TrialSpec.budget "auto") the last epoch
is the first at which the search metric has plateaued (engine/run/stopper.py), else the cap
(TrialSpec.epochs); every line then says "end_reason" (None until the last). A NaN or
infinite loss ends the trial as "diverged" with its last finite metrics. The same loop runs
as a plain Tune function (one worker) and on each worker of a DDP TorchTrainer; it knows
nothing of Ray: engine/run/ray_backend/trainables.py hands it a TrialSpec and a `Session`
with the Ray calls. It uses only the models' public API (build, forward/loss, reconstruct,
make_optimizer, fit_density).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import models
from engine.data import apply_options, load_dataset
from engine.eval.evaluate import evaluate, psnr, reconstruction_mse
from engine.eval.qualitative import save_qualitative
from engine.eval.training_fid import METRIC as FID_METRIC, TrainingFid, due
from engine.run.types import TrialSpec
from engine.run.stopper import PlateauStopper, history_from_lines
from engine.eval.tensorboard import TrialBoard
from engine.trial_files import read_lines

STATE_FILE = "state.pt"
# beside STATE_FILE in every checkpoint: the trial's own result line of each epoch so far, as
# JSON lines. Tune's result.json is written by the driver, which may die holding lines the
# trial had reported (a kill -9 lost epochs 7-8 before a checkpoint at 9); --resume fills such
# gaps from here (engine/run/resume.py merge_results), with no pickle read on the driver
LINES_FILE = "lines.jsonl"
_clock = time.monotonic  # the checkpoint cadence's clock (a test's fake one replaces it)


class Diverged(Exception):
    """A training loss turned NaN or infinite."""


@dataclass
class Session:
    """What the trial needs from whoever runs it (Tune, or a Ray Train worker)."""
    report: Callable[[dict, str | None], None]  # (metrics, checkpoint folder or None)
    trial_dir: str
    board: str | None = None  # TensorBoard's events folder (rank 0 only); <trial_dir>/tensorboard
    resume: dict | None = None  # the state saved by the last checkpoint, if restarting
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # e.g. DDP
    all_reduce: Callable[[torch.Tensor], None] | None = None  # in-place sum over workers


DEVICE_DATA_SHARE = 0.25  # of a trial's share of its GPU's memory that its data may take


def data_device(nbytes: int, device: torch.device, gpu_share: float,
                gpu_memory: int | None = None) -> torch.device:
    """Where a trial holds its training and validation images (`nbytes` of them, uint8 where
    the data set is 8-bit): on its GPU when they take at most DEVICE_DATA_SHARE of the trial's
    share of that GPU's memory (`gpu_share` of `gpu_memory` bytes, the whole GPU for a share
    of 0 or more than 1), else on the host, where train_epoch pins each batch and copies it
    without a sync. CelebA-64's 2.24 GB: on the device of a trial with a whole 24 GB GPU, on
    the host at --gpus-per-trial 1/8 (3 GB each), so 8 trials' data do not fill the GPU."""
    if device.type != "cuda":
        return device
    if gpu_memory is None:
        gpu_memory = torch.cuda.get_device_properties(device).total_memory
    share = gpu_share if 0 < gpu_share <= 1 else 1.0
    return device if nbytes <= DEVICE_DATA_SHARE * share * gpu_memory else torch.device("cpu")


def _batch(images: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """images[rows] as floats on `device`: gathered where the images are, then (from the
    host to a GPU) pinned, so that the copy is asynchronous: no sync a batch."""
    x = images[rows]
    if x.device != device and device.type == "cuda":
        x = x.pin_memory()
    return models.float_images(x, device)


def train_epoch(net, opt, images: torch.Tensor, batch_size: int, gen: torch.Generator,
                rank: int = 0, world: int = 1,
                all_reduce: Callable[[torch.Tensor], None] | None = None,
                scaler: torch.amp.GradScaler | None = None,
                device: torch.device | None = None) -> dict[str, float]:
    """One pass over `images` ((N, C, H, W) uint8 codes or floats, models/images.py; each
    minibatch converted on `device`, default the images' own) in shuffled minibatches of
    `batch_size` (summed over workers); returns the mean of every loss term over the examples
    of all workers.

    `net(x)` returns the loss dict (a DDP wrapper syncs gradients through forward). Every
    worker draws the same permutation from `gen` and takes rows rank::world of each batch, so
    W workers step exactly as one worker on the whole batch would, for a loss that is a mean
    over examples (not for batch statistics: BatchNorm, the MMD, each worker's own noise)
    and up to float rounding (tests/test_faults.py compares the parameters).
    Raises Diverged after a non-finite loss, the parameters as they were before its step.
    Also returns "loss_last_batch", the loss of the epoch's last minibatch (mean over the
    workers' examples): what the UAE authors' ReduceLROnPlateau monitors (models/schedules.py).

    No host-device sync a batch where the optimizer can skip a step on the device (fused
    Adam, models' make_optimizer): the terms are summed on the device and read once, at the
    epoch's end, with the divergence flag; from the first non-finite loss on, every step is
    skipped by the optimizer's found-inf input (as GradScaler skips one), so the epoch runs to
    its end but changes nothing. Any other optimizer reads the flag before each step.

    `scaler` (fp16, run_trial): the loss is scaled before backward and GradScaler skips each
    step whose gradients overflow, by the same found-inf input; a non-finite loss still ends
    the epoch in Diverged, the parameters finite (each step it skipped changed nothing).
    """
    net.train()
    device = images.device if device is None else torch.device(device)
    # drawn by the CPU generator that the checkpoint saves (a resume replays it); one copy,
    # to where the images are
    order = torch.randperm(len(images), generator=gen).to(images.device)
    masked = scaler is None and _skips_steps_on_device(opt)
    sums: dict[str, torch.Tensor] = {}  # term -> sum over examples, float64 on the device
    bad = torch.zeros((), device=device)  # 1.0 from the first non-finite loss of any worker
    first_bad = torch.full((), -1.0, dtype=torch.float64, device=device)  # its batch's start
    n = 0
    last = (torch.zeros((), dtype=torch.float64, device=device), 0)  # loss x examples, examples
    try:
        for i in range(0, len(images), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 * world:  # BatchNorm and the MMD need 2 inputs per worker
                continue
            batch = _batch(images, idx[rank::world], device)  # uint8 -> floats, on the device
            terms = net(batch)
            flag = (~torch.isfinite(terms["loss"].detach())).float()
            # every worker must stop at the same batch, or the next all-reduce hangs
            if world > 1:
                all_reduce(flag)
            first_bad = torch.where((bad == 0) & (flag > 0), float(i), first_bad)
            bad = torch.maximum(bad, (flag > 0).float())
            if not masked and scaler is None and bad.item():  # it cannot skip: a sync a batch
                raise Diverged(f"non-finite loss in the batch starting at example {i}")
            opt.zero_grad(set_to_none=True)
            # DDP averages the workers' gradients; a worker's loss is a mean over its own
            # rows, so weighting it by world * its share of the batch makes that average the
            # gradient of the whole batch's mean even when the batch does not split evenly
            # (75 -> 38 + 37)
            share = world * len(batch) / len(idx) if world > 1 else 1.0
            if scaler is not None:
                scaler.scale(terms["loss"] * share).backward()
                # skipped where a gradient is not finite (a NaN loss's are not)
                scaler.step(opt)
                scaler.update()
            else:
                (terms["loss"] * share).backward()
                if masked:
                    # fused Adam leaves parameters and moments as they are
                    opt.found_inf = bad
                opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double() * len(batch)
            n += len(batch)
            last = (terms["loss"].detach().double() * len(batch), len(batch))
    finally:  # also when it raises: a later caller's plain step must not see the flag
        if masked:
            opt.found_inf = None
    keys = sorted(sums)
    counts = torch.tensor([n, last[1]], dtype=torch.float64, device=device)
    packed = torch.cat([torch.stack([*(sums[k] for k in keys), last[0]]), counts])
    if world > 1:  # sums and counts over workers, so the means are over every example
        all_reduce(packed)  # (also after a divergence: every worker makes the same calls)
    # the epoch's one read: term sums, last batch's loss x count, the two counts, the flag
    *term_sums, last_sum, total, last_n, flag, start = torch.cat(
        [packed, torch.stack([bad.double(), first_bad])]).tolist()
    if flag:
        raise Diverged(f"non-finite loss in the batch starting at example {int(start)}")
    return {**{k: v / total for k, v in zip(keys, term_sums)},
            "loss_last_batch": last_sum / last_n}


def _skips_steps_on_device(opt) -> bool:
    """Whether `opt` takes a found-inf tensor and skips its step on the device where it is 1
    (torch's fused Adam/AdamW; the setting lives in the param groups, which a loaded
    optimizer state may have changed)."""
    return (getattr(opt, "_step_supports_amp_scaling", False)
            and all(g.get("fused") for g in opt.param_groups))


def _any_worker(bad: bool, world: int, all_reduce, device) -> bool:
    """Whether `bad` holds on any worker (one tiny all-reduce when there are several)."""
    if world == 1:
        return bad
    flag = torch.tensor([float(bad)], device=device)
    all_reduce(flag)
    return flag.item() > 0


def run_trial(spec: TrialSpec, session: Session) -> None:
    """Train spec.config with spec.seed on spec.dataset (with the row's data options,
    engine/data/options.py) for spec.epochs, or to its plateau of spec.metric with
    --epochs auto (spec.epochs then the cap); its checkpoints hold spec.params, the Tune
    trial's config as Tune stored it (params.json)."""
    seed, epochs, cfg = spec.seed, spec.epochs, spec.config
    data = apply_options(load_dataset(spec.dataset, spec.data_root), spec.data)
    dev = session.device
    tune_backends(dev)
    torch.manual_seed(seed)  # the same initial weights for a seed on any worker
    model = models.build(cfg, data.image_shape).place(dev)  # NHWC for convs on a GPU
    # then each worker its own noise stream (rank 0 continues the one-worker stream)
    if session.rank:
        torch.manual_seed(seed + 100_003 * session.rank)
    opt = model.make_optimizer()
    # fp16's small range needs the loss scaled (bf16 has fp32's exponent and needs none)
    scaler = torch.amp.GradScaler(dev.type) if spec.precision == "fp16" else None
    gen = torch.Generator().manual_seed(seed)
    start, last = 1, {}
    monitored: list[float] = []  # each epoch's last-batch loss, for lr_schedule="plateau"
    lines: list[dict] = []  # this trial's result line of every epoch (LINES_FILE)
    # --epochs auto: the rule that ends the trial at its plateau, its state the history of
    # what it reads, which every checkpoint holds (a resume decides as if never stopped)
    plateau = (PlateauStopper(spec.metric, spec.mode, spec.min_epochs, epochs,
                              patience=spec.plateau_patience,
                              early_stopping=spec.early_stopping)
               if spec.budget == "auto" else None)
    if session.resume is not None:  # restart after a failure or an interrupted search
        model.load_state_dict(session.resume["model"])
        opt.load_state_dict(session.resume["optimizer"])
        gen.set_state(session.resume["generator"])
        if scaler is not None and "scaler" in session.resume:
            scaler.load_state_dict(session.resume["scaler"])
        torch.set_rng_state(session.resume["torch_rng"])  # the noise of sampling, dropout
        if dev.type == "cuda" and "cuda_rng" in session.resume:
            torch.cuda.set_rng_state(session.resume["cuda_rng"], dev)
        start, last = session.resume["epoch"] + 1, session.resume["metrics"]
        lines = [x for x in session.resume.get("lines", []) if x.get("epoch", 0) < start]
        monitored = list(session.resume.get("monitored", []))  # none before the plateau rate
        if plateau is not None:
            plateau.restore(TRIAL, _plateau_history(session, plateau, start - 1))
        if session.rank:  # the state is rank 0's (only it checkpoints): a stream of its own
            torch.manual_seed(seed + 100_003 * session.rank + 7_919 * start)
        if session.resume.get("from_folder"):
            # continued by --resume, whose result lines were set aside: the checkpoint's own
            # epoch first, so that no line is lost where the driver died after the checkpoint
            # was written but before its result line was (the merge keeps each epoch once)
            session.report(last, None)
        if start > epochs or last.get("status") == "completed":  # at its final checkpoint
            return  # (an auto budget's may come before the cap): nothing left to train
    net = session.wrap(model)
    # held as the data set holds them (uint8: a quarter of float32's bytes), on the GPU where
    # they fit the trial's share of it, each batch converted there; on the host the training
    # split stays the page cache's shared memory map
    held = data_device(data.train.images.nbytes + data.val.images.nbytes, dev,
                       spec.resources.gpu)
    train, val = data.train.images.to(held), data.val.images.to(held)
    # the trial's folder, which its pictures and evaluation files go into: Tune makes it only
    # once the driver writes the first result line, after a one-epoch trial has ended
    os.makedirs(session.trial_dir, exist_ok=True)
    board = (TrialBoard(session.trial_dir, spec, data, start, session.board)
             if session.rank == 0 else None)
    # val/fid_rec every few epochs (rank 0): whether the rows' FID order had settled
    cheap_fid = TrainingFid.of(data, spec.evaluation, dev) if session.rank == 0 else None
    drawn: dict = {}  # the evaluation's density samples, which the board's grids reuse
    since = _clock()  # the last checkpoint (or this process's start of training)
    try:
        for epoch in range(start, epochs + 1):
            t0 = time.perf_counter()
            # a function of the epoch and the checkpointed losses: a resume takes it too
            lr = model.lr_at(epoch, epochs, monitored)
            models.set_lr(opt, lr)
            try:
                with model.compute_in(spec.precision):  # training only: evaluation is fp32
                    terms = train_epoch(net, opt, train, cfg.batch_size, gen, session.rank,
                                        session.world, session.all_reduce, scaler, dev)
                val_mse = reconstruction_mse(model, val)
                # BatchNorm statistics differ per rank: the workers must agree, or hang
                if _any_worker(not math.isfinite(val_mse), session.world,
                               session.all_reduce, dev):
                    raise Diverged("non-finite validation error")
            except Diverged:
                if board is not None:
                    board.end("diverged")
                session.report(_diverged(last, epoch, spec.metric, spec.mode), None)
                return
            monitored.append(terms["loss_last_batch"])
            took = time.perf_counter() - t0
            # the mean over epochs 1..epoch (a resumed trial's `last` holds the earlier mean),
            # so the final line, which the report tables, has the whole run's time per epoch
            mean = (last.get("time/epoch_mean_s", took) * (epoch - 1) + took) / epoch
            metrics = {"epoch": epoch, "status": "running",
                       # a trial restarted after a failure says from where (tests, users);
                       # in every line, so that progress.csv has one set of columns
                       "restored_from_epoch": start - 1 if start > 1 else None,
                       **{f"train/{k}": v for k, v in terms.items()}, "train/lr": lr,
                       "val/mse": val_mse, "val/psnr": psnr(val_mse),
                       "time/epoch_s": took, "time/epoch_mean_s": mean}
            final = epoch == epochs
            if plateau is not None:
                # rank 0's decision, which every worker takes (their validation may differ)
                final = _any_worker(plateau(TRIAL, metrics) and session.rank == 0,
                                    session.world, session.all_reduce, dev)
                metrics["end_reason"] = plateau.reason(TRIAL) if final else None
            if cheap_fid is not None and cheap_fid.reason is None:  # a key in every line
                metrics[FID_METRIC] = (cheap_fid(model) if due(
                    epoch, spec.evaluation.train_fid_every, final) else None)
            if final:
                if session.rank == 0:  # the others' reports are not relayed (see ddp_trial)
                    metrics.update(evaluate(model, data, dev, spec.evaluation, seed=seed,
                                            out_dir=session.trial_dir, drawn=drawn))
                    if cheap_fid is not None and cheap_fid.reason:  # said, not skipped
                        metrics.setdefault("notes", {})[FID_METRIC] = cheap_fid.reason
                    _save_pictures(model, data, drawn, dev, session.trial_dir, seed)
                metrics["status"] = "completed"
            if board is not None:
                board.epoch(model, metrics, epoch, final=final, drawn=drawn)
            last = metrics
            lines.append(metrics)
            if final or _checkpoint_due(spec, epoch, _clock() - since):
                since = _clock()
                _report_with_checkpoint(session, metrics, model, opt, gen, spec.params,
                                        monitored, scaler,
                                        plateau.history(TRIAL) if plateau else None, lines)
            else:
                session.report(metrics, None)
            if final:
                break
    finally:
        if board is not None:
            board.close()


TRIAL = "trial"  # the one trial a trainable's PlateauStopper follows


def _plateau_history(session: Session, plateau: PlateauStopper, epochs: int) -> dict:
    """The plateau rule's history of epochs 1..`epochs` for a restored trial: its
    checkpoint's, else (a checkpoint from before it held one) its result lines in the trial
    folder's result.json and, set aside by --resume, result-before-resume.json."""
    saved = session.resume.get("plateau")
    if saved is not None:
        return saved
    lines = [x for name in ("result-before-resume.json", "result.json")  # the later wins
             for x in read_lines(Path(session.trial_dir, name))]
    history = history_from_lines(lines, plateau.names, epochs)
    if history is None:
        raise ValueError(f"--epochs auto: the checkpoint of epoch {epochs} holds no metric "
                         f"history and the result lines in {session.trial_dir} miss some of "
                         "its epochs; the plateau rule cannot continue exactly")
    return history


def _save_pictures(model, data, drawn: dict, dev, trial_dir: str, seed: int) -> None:
    """The report's qualitative figure's strips (engine/eval/qualitative.py); a picture
    that cannot be drawn must not cost the trial its result, so it says why instead."""
    try:
        save_qualitative(model, data.test.images, drawn, dev, trial_dir, seed)
    except Exception as e:  # noqa: BLE001
        print(f"qualitative figure: not saved: {type(e).__name__}: {e}", file=sys.stderr)


def tune_backends(device: torch.device) -> None:
    """On a GPU, cuDNN times its convolution algorithms for each new input shape once and
    keeps the fastest (a trial's shapes are fixed: its batch size, and the last batch's). The
    choice may differ between runs, so GPU results are reproducible to float rounding, not bit
    for bit, as GPU reductions already were. Nothing changes on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def _checkpoint_due(spec: TrialSpec, epoch: int, elapsed: float) -> bool:
    """The last epoch always (the cap here; run_trial adds an auto budget's plateau); else
    every checkpoint_every epochs, or, by time (the default, 5 minutes), the first epoch to
    end `checkpoint_seconds` after the last checkpoint: a
    checkpoint is the model, Adam's moments and the RNG states (161-433 MB for the conv nets),
    written to shared storage, which every epoch would cost more than short epochs do."""
    if epoch == spec.epochs:
        return True
    if spec.checkpoint_every:
        return epoch % spec.checkpoint_every == 0
    return elapsed >= spec.checkpoint_seconds


def _diverged(last: dict, epoch: int, metric: str, mode: str) -> dict:
    """The last finite metrics, marked, with the stopping metric at its worst, so that ASHA
    and Optuna never take a diverging configuration for a good one; its last finite value
    stays under "diverged/<metric>"."""
    out = dict(last)
    if metric in last:
        out[f"diverged/{metric}"] = last[metric]
    out[metric] = math.inf if mode == "min" else -math.inf
    out.update(epoch=epoch, status="diverged", diverged_at_epoch=epoch)
    return out


def _report_with_checkpoint(session: Session, metrics: dict, model, opt, gen,
                            params: dict, monitored: list[float], scaler=None,
                            plateau: dict | None = None, lines: list[dict] = ()) -> None:
    """Report with a checkpoint that holds everything to continue and to trace the result:
    weights, optimizer, the shuffling generator, the epoch, the losses a plateau rate reads,
    fp16's loss scale, an auto budget's metric history (`plateau`) and the resolved params;
    beside it (LINES_FILE) the result `lines` of every epoch up to this one."""
    if session.rank != 0:  # only rank 0 writes; every worker still reports (a barrier)
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    **({"cuda_rng": torch.cuda.get_rng_state(model_device(model))}
                       if model_device(model).type == "cuda" else {}),
                    **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                    "epoch": metrics["epoch"], "monitored": list(monitored),
                    **({"plateau": plateau} if plateau is not None else {}),
                    "metrics": metrics, "params": params}, os.path.join(d, STATE_FILE))
        with open(os.path.join(d, LINES_FILE), "w") as f:
            f.writelines(json.dumps(x, default=_plain) + "\n" for x in lines)
        session.report(metrics, d)  # Ray copies the folder to the run's storage


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def newest_state(folder: str) -> dict | None:
    """The state of the latest epoch among the checkpoint_*/ folders in `folder` that load
    (one half-copied when a process died is skipped), or None if there is none."""
    best = None
    for path in sorted(Path(folder).glob(f"checkpoint_*/{STATE_FILE}")):
        try:
            state = load_state(str(path.parent))
        except Exception:  # noqa: BLE001  (truncated zip, half-written file)
            continue
        if best is None or state["epoch"] > best["epoch"]:
            best = state
    return best


def load_state(folder: str) -> dict:
    """A checkpoint's state; weights_only, so a checkpoint cannot run code when loaded; with
    its result lines (LINES_FILE; [] in a checkpoint from before it held them) as "lines"."""
    state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
    state["lines"] = read_lines(Path(folder, LINES_FILE))
    return state


def _plain(value):
    """JSON for a numpy or torch scalar in a metrics line (as Tune's own JSON logger)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
