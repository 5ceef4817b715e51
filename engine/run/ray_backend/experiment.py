"""A search as one Tune experiment: its param space from the RunSpec, the scheduler and
searcher, the trial folders' names, Ctrl-C / SIGTERM and a full disk, and Tune's result files."""
from __future__ import annotations

import csv
import errno
import logging
import math
import os
import shutil
import signal
import threading
from pathlib import Path

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from engine.run.ray_backend.cluster import cluster_resources
from engine.run.ray_backend.progress import _Progress, _trial_count
from engine.run.ray_backend.trackers import tracker_callbacks
from engine.run.ray_backend.trainables import ddp_trial, one_worker_trial
from engine.files import STOPPED_FILE, write_json_atomic
from engine.run import console
from engine.run.types import RunSpec


def param_space(spec: RunSpec, pairs: list[list] | None = None) -> dict:
    """Tune's param space of the search: the constants every trial's params hold
    (RunSpec.trial_space), its label and seed (grids over the rows and seeds; a sampled
    search's first row, its config sampled from the space; or `pairs`: see run_experiment),
    its resolved config looked up by label, and a row's data options where it has any."""
    space = spec.trial_space()
    rows = {r.label: r.config.to_dict() for r in spec.rows}
    if pairs:  # [label, seed, folder or None, config or None]
        space.update(pair=tune.grid_search([list(p) for p in pairs]),
                     label=tune.sample_from(lambda config: config["pair"][0]),
                     seed=tune.sample_from(lambda config: config["pair"][1]),
                     config=tune.sample_from(lambda config: config["pair"][3]
                                             or rows[config["pair"][0]]))
    elif spec.algorithm == "optuna":
        first = spec.rows[0]
        space.update(label=first.label, seed=spec.seeds[0],
                     config={**first.config.to_dict(), **spec.sampled})
    else:
        space.update(label=grid(r.label for r in spec.rows), seed=grid(spec.seeds))
    if "config" not in space:  # explicit rows: the resolved config is looked up by label
        space["config"] = tune.sample_from(lambda config: rows[config["label"]])
    data = spec.data_options
    if data:  # only rows with data options: every other search's params stay as they were
        space["data"] = tune.sample_from(lambda config: data.get(config["label"]))
    return space


def _ddp_concurrency(res) -> int:
    """How many trials start at once, 0 for as many as their resources allow: Tune does not
    see a DDP trial's TorchTrainer workers, so it starts only as many as the cluster's CPUs
    and GPUs hold."""
    if res.workers <= 1:
        return 0
    have = cluster_resources()
    fits = [have.get("CPU", 0) // (res.cpu * res.workers)]
    if res.gpu:
        fits.append(have.get("GPU", 0) // (res.gpu * res.workers))
    return max(1, int(min(fits)))


def _reuse_actors(trials: int, res, max_concurrent: int) -> bool:
    """Whether Tune hands a finished trial's actor (a Ray worker that has imported the engine)
    to a trial still waiting: only where some trial must wait, i.e. there are more trials than
    run at once (the concurrency limit, the cluster's CPUs and GPUs now). Where every trial has
    a slot of its own, reuse saves nothing and can cost the experiment's end up to 5 s: when a
    short trial's actor takes over a trial whose own actor was starting, Tune drops that actor
    and, once the last trial has reported, waits for it to stop (TuneController._cleanup_trials)
    while it is still importing the engine."""
    have = cluster_resources()
    slots = [max_concurrent or math.inf]
    if res.workers <= 1:  # a DDP trial's function holds no CPU: its limit is max_concurrent
        slots.append(have.get("CPU", 0) // res.cpu if res.cpu else math.inf)
        if res.gpu:
            slots.append(have.get("GPU", 0) // res.gpu)
    return trials > min(slots)


class OnFirstTrial(tune.Callback):
    """`fn()` once, in a daemon thread, when the experiment's first trial starts. The driver
    then only waits on its trials, and Tune, its searcher and the trackers have made their own
    imports: a thread that imported a package while the main thread imported another that
    shares modules with it could meet it in a circular wait (importlib then hands one of them
    a partly initialized module)."""

    def __init__(self, fn):
        self.fn, self.started = fn, False

    def on_trial_start(self, iteration, trials, trial, **info):
        if not self.started:
            self.started = True
            threading.Thread(target=self.fn, name="on first trial", daemon=True).start()


# Ray's own integrations' callbacks, which Tune's telemetry counts by class name beside its
# default loggers (ray.air._internal.usage._count_callbacks)
_RAY_INTEGRATIONS = ("WandbLoggerCallback", "MLflowLoggerCallback", "CometLoggerCallback",
                     "AimLoggerCallback")


def _count_callbacks(callbacks=None, *args, **kwargs) -> dict[str, int]:
    """Tune's telemetry count of an experiment's callbacks ({class name or "CustomCallback" /
    "CustomLoggerCallback": count}), as Ray's `_count_callbacks` makes it, by the same class
    names, without importing the integrations (MLflow, W&B, Comet, Aim) that it imports only
    to read those names: ~1 s of every search's start on 2 cores where no tracker is used
    (benchmarks/search_fixed_cost.py). Called in another way than today's Ray calls it, or
    failing, it is Ray's own: telemetry never stops a search."""
    if args or kwargs:  # not the call this count was written for
        return _RAYS_COUNT(callbacks, *args, **kwargs)
    try:
        from ray.tune.logger import LoggerCallback
        from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES
        ours = set(_RAY_INTEGRATIONS) | {c.__name__ for c in DEFAULT_CALLBACK_CLASSES}
        counts: dict[str, int] = {}
        for callback in callbacks or []:
            if not isinstance(callback, tune.Callback):
                continue  # Tune refuses it later; Ray does not count it either
            name = type(callback).__name__
            if name not in ours:
                name = ("CustomLoggerCallback" if isinstance(callback, LoggerCallback)
                        else "CustomCallback")
            counts[name] = counts.get(name, 0) + 1
        return counts
    except Exception:  # noqa: BLE001
        if _RAYS_COUNT is None:  # not installed by _light_telemetry: nothing to fall back on
            raise
        return _RAYS_COUNT(callbacks)


_RAYS_COUNT = None  # Ray's own _count_callbacks, once _light_telemetry has replaced it


def _light_telemetry() -> None:
    """Tune's callback count without its imports (_count_callbacks), where Ray's private
    module still has the function it replaces; else Ray's own, imports and all."""
    global _RAYS_COUNT
    try:
        from ray.air._internal import usage
    except ImportError:
        return
    own = getattr(usage, "_count_callbacks", None)
    if callable(own) and own is not _count_callbacks:
        _RAYS_COUNT, usage._count_callbacks = own, _count_callbacks


def run_experiment(spec: RunSpec, out: Path, *, callbacks: list | None = None,
                   search_alg: str | None = None, num_samples: int | None = None,
                   pairs: list[list] | None = None,
                   told: list[tuple[dict, float]] | None = None, verbose: int = 0) -> str:
    """Run the search `spec` as a Tune experiment in the run folder `out`; returns
    "complete" (every trial ended: completed, diverged, errored or stopped by the scheduler),
    or "interrupted" (Ctrl-C / SIGINT) or "terminated" (SIGTERM): the trials still running
    were stopped where they were, to be continued by --resume.

    By default the spec's own trials: its grid of rows x seeds, or its sampled search's
    samples. `pairs` instead runs exactly these [label, seed, trial folder or None, config or
    None] trials as a new experiment in the same run folder; a trial given its old folder
    continues from the newest checkpoint there (--resume), one given a config trains it (a
    sampled trial), the others their row's (`search_alg` "grid", `num_samples` 1). `told`
    gives a sampled search's searcher the (sampled values, final metric) of trials already
    run, and `num_samples` the samples still owed. The spec's trackers also log every trial
    to MLflow, W&B or Aim (tracker_callbacks).

    Nothing of Tune's saved state is read back (no Tuner.restore): it is pickled, and a
    pickle from a run folder on shared storage would run its writer's code here.
    """
    run_dir, res = str(out), spec.resources
    metric, mode, epochs = spec.metric, spec.mode, spec.epochs
    search_alg = search_alg or spec.algorithm
    if num_samples is None:
        num_samples = spec.samples if spec.algorithm == "optuna" else 1
    if res.workers > 1:
        # The trial function only waits on its TorchTrainer, whose workers hold the CPUs and
        # GPUs; a bundle cannot be empty, so it asks for one byte of memory and no CPU (with
        # a CPU share, W workers x 1 CPU would never fit on a W-CPU machine).
        trainable = tune.with_resources(ddp_trial, {"cpu": 0, "memory": 1})
    else:
        trainable = tune.with_resources(one_worker_trial, {"cpu": res.cpu, "gpu": res.gpu})
    space = param_space(spec, pairs)
    max_concurrent = spec.max_concurrent or _ddp_concurrency(res)
    trials = _trial_count(space, num_samples)
    progress, interrupt = _Progress(metric, epochs, trials, auto=spec.budget == "auto"), \
        _Interrupt()
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, num_samples=num_samples,
        scheduler=_scheduler(spec.scheduler, epochs),
        search_alg=_search_alg(search_alg, metric, mode, told),
        max_concurrent_trials=max_concurrent or None,
        reuse_actors=_reuse_actors(trials, res, max_concurrent),
        trial_dirname_creator=_dirname, trial_name_creator=_dirname)
    run_config = tune.RunConfig(
        name=os.path.basename(run_dir), storage_path=os.path.dirname(run_dir),
        callbacks=[JsonLoggerCallback(), _CSVLogger(), progress,
                   *tracker_callbacks(spec.trackers, run_dir), *(callbacks or [])],
        verbose=verbose, stop=interrupt,
        failure_config=tune.FailureConfig(max_failures=1),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    logs = [logging.getLogger(name) for name in DISK_LOGGERS]
    for log in logs:
        log.addFilter(interrupt.disk_filter)
    _light_telemetry()
    try:
        with interrupt:
            tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                       run_config=run_config).fit()
    except Exception:  # noqa: BLE001  (Tune's results of a full disk: EOFError on its files)
        if interrupt.disk_full or disk_full(run_dir):
            return "disk full"
        if interrupt.read_only or read_only(run_dir):
            return "read-only"
        raise
    finally:
        for log in logs:
            log.removeFilter(interrupt.disk_filter)
    if interrupt.disk_full:
        return "disk full"
    if interrupt.read_only:
        return "read-only"
    if interrupt.signum == signal.SIGTERM:
        return "terminated"
    return "interrupted" if interrupt.asked or not progress.complete else "complete"


DISK_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.execution.experiment_state",
                "ray._private.worker", "ray.tune.analysis.experiment_analysis")


def disk_full(folder: str, below: int = 64 << 20) -> bool:
    """Whether the file system of `folder` has less than `below` bytes free (64 MiB: less
    than one conv net's checkpoint)."""
    try:
        return shutil.disk_usage(folder).free < below
    except OSError:
        return False


def read_only(folder: str) -> bool:
    """Whether the file system of `folder` is mounted read-only now."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class _Interrupt(tune.Stopper):
    """SIGINT (Ctrl-C) or SIGTERM (`kill`, a batch scheduler's end of a job) while the search
    runs: every running trial is stopped where it is (its checkpoints stay) and the experiment
    ends; `asked` tells the driver it was interrupted, `signum` by which. A second signal is
    its default: KeyboardInterrupt, or the end of the process, at once. A trial that failed for a
    full disk (ENOSPC, seen in Tune's log of the failure) ends the experiment the same way,
    `disk_full` set, and its traceback is not logged: every other trial would fail alike."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.asked = self.disk_full = self.read_only = False
        self.signum: int | None = None
        self._before: dict = {}

    def disk_filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()} {error or ''}"
        code = getattr(error, "errno", None)
        if "No space left on device" in text or code == errno.ENOSPC:
            self.disk_full = True
            return False
        if "Read-only file system" in text or code == errno.EROFS:  # the storage remounted
            self.read_only = True
            return False
        # once the disk is full (or read-only), Tune's complaints about the files it could
        # not write
        return not ((self.disk_full or self.read_only)
                    and record.name.endswith("experiment_analysis"))

    def __enter__(self):
        # (Ray's driver otherwise dies of SIGTERM in its C++ handler: rc -6, no resume line)
        self._before = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, before in self._before.items():
            signal.signal(s, before)

    def _handle(self, signum, frame):
        self.asked, self.signum = True, signum
        name = signal.Signals(signum).name
        print(f"interrupt ({name}): stopping the running trials ("
              f"{'Ctrl-C' if signum == signal.SIGINT else name} again to quit at once)",
              file=console.err(), flush=True)
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.asked or self.disk_full or self.read_only


class _CSVLogger(CSVLoggerCallback):
    """Tune's progress.csv, whose columns stay those of the file's header: Tune's own logger
    takes a continued trial's columns from its first new line (e.g. with restored_from_epoch),
    under the old header, and the file no longer parses."""

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_files:
            self._setup_trial(trial)
        if self._trial_csv[trial] is None and self._trial_continue[trial]:
            with open(Path(trial.local_path, "progress.csv"), newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header)
        super().log_trial_result(iteration, trial, result)


class _RecordingASHA:
    """Mixed into ASHAScheduler: a trial the scheduler stops before its last epoch gets a
    stopped.json in its folder, so that the report, the progress lines and --resume tell it
    from a trial an interrupt left unfinished."""

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == "STOP" and result.get("status") == "running"
                and trial.path is not None):
            # its folder may not exist yet at its first result: nothing the trial writes
            # there (its TensorBoard events live in <run>/tensorboard) need come before it
            Path(trial.path).mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(trial.path) / STOPPED_FILE, {
                "by": "ASHA", "at_epoch": result.get("epoch"),
                "metric": self._metric, "value": result.get(self._metric)})
        return action


def _dirname(trial) -> str:
    """Readable in TensorBoard's run list and unique by the trial id; a continued trial
    keeps its old folder."""
    pair = trial.config.get("pair")
    if pair and pair[2]:
        return pair[2]
    # a pair's label and seed are sample_from domains here, not yet their values
    label, seed = (pair[0], pair[1]) if pair else (trial.config["label"], trial.config["seed"])
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(label))
    return f"{label}_seed{seed}_{trial.trial_id}"


def _scheduler(name: str, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    if name == "fifo":
        return FIFOScheduler()

    class RecordingASHA(_RecordingASHA, ASHAScheduler):
        pass
    # rungs at epochs/9, epochs/3, epochs (reduction factor 3), counted in reported epochs
    # on the epoch, not Tune's iteration count, which restarts when a DDP trial is retried
    return RecordingASHA(time_attr="epoch", max_t=epochs,
                         grace_period=max(1, epochs // 9), reduction_factor=3)


def space_corners(space: dict) -> list[dict]:
    """Config overrides at the corners of a space of ray.tune domains (at most 64), to
    validate before starting."""
    from ray.tune.search.sample import Categorical
    points = [{}]
    for k, dom in space.items():
        values = dom.categories if isinstance(dom, Categorical) else [dom.lower, dom.upper]
        points = [{**p, k: v} for p in points for v in values][:64]
    return points


def grid(values) -> dict:
    """Tune's grid over `values` (a param space entry)."""
    return tune.grid_search(list(values))


def describe_space(space: dict) -> dict[str, str]:
    """{field: the Optuna distribution as JSON} of a space of ray.tune domains, as
    OptunaSearch samples it (so that a report can rebuild an Optuna study from the trials)."""
    from optuna.distributions import distribution_to_json
    from ray.tune.search.optuna import OptunaSearch
    return {name: distribution_to_json(d)
            for name, d in OptunaSearch.convert_search_space(space).items()}


def _search_alg(name: str, metric: str, mode: str,
                told: list[tuple[dict, float]] | None = None):
    """None for a grid (Tune's default: every grid point, x seeds, in order); for "optuna",
    TPE with seed 0, told `told`'s ({"config/<field>": sampled value}, final metric) of the
    trials a resumed search already ran, so that it samples the rest knowing them."""
    if name == "grid":
        return None
    from ray.tune.search.optuna import OptunaSearch

    class ToldOptuna(OptunaSearch):
        def set_search_properties(self, metric, mode, config, **spec):
            ok = super().set_search_properties(metric, mode, config, **spec)
            for values, value in told or []:
                params = {k: v for k, v in values.items() if k in self._space}
                if len(params) == len(self._space) and value is not None:
                    self.add_evaluated_point(params, value)
            return ok
    # a resumed search's own seed: the same seed would propose the first samples again
    return ToldOptuna(metric=metric, mode=mode, seed=len(told or []))


