"""Every Ray call of the engine, so that the next change of Ray's API moves one file.

A search becomes one Tune experiment in the run folder; each trial is one params dict
(label, resolved config, seed, data set, budget) that Tune stores as the trial's params.json.
- One worker per trial: a plain function trainable (starts in well under a second, since
  Tune reuses the actor).
- Several workers: the function trainable starts a TorchTrainer (DDP) for the trial and
  relays its reports through TuneReportCallback (Ray 2.6x no longer takes a Trainer in a
  Tuner).
Checkpoints go through Ray (every epoch); a trial that fails (or whose node is lost) is
retried from its last one. Every report names the Ray node it came from (`node_id`).
"""
from __future__ import annotations

import os

# Our own TensorBoard writer logs richer summaries than Tune's automatic TBX logger, so the
# automatic loggers are off and the JSON/CSV ones (which the reports read) are added back.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative paths keep meaning the repo's
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
# Checkpointing every epoch with num_to_keep forces a small experiment-state snapshot each
# time (so a restore never points at a deleted checkpoint); it costs ~10 ms, so no warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import logging  # noqa: E402
import sys  # noqa: E402

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402

from engine.trial import Session, load_state, newest_state, run_trial  # noqa: E402


def init(address: str | None) -> None:
    """Attach to a running cluster (`address`, e.g. "auto" or "HEAD_IP:6379") or start Ray on
    this machine only, with the dashboard off and token authentication on.

    Ray >= 2.59 turns token authentication on for a cluster that ray.init starts (the token in
    ~/.ray/auth_token, made on first use) unless RAY_AUTH_MODE says otherwise. It matters: on
    Linux, Ray's gRPC servers (GCS, raylet, workers) listen on every interface of the machine
    and Ray has no setting to bind them to localhost only, so the token is what keeps another
    machine on the network from running code here. A user who turned it off is told so."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        print(f"warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: Ray's ports on this "
              "machine accept anyone who reaches them; unset it to keep token authentication",
              file=sys.stderr, flush=True)
    # "local": a new Ray on this machine, even where $RAY_ADDRESS names a cluster (e.g. the
    # job API's tunnel that the README exports for `ray job submit`)
    ray.init(address="local", include_dashboard=False, log_to_driver=True)


def node_id() -> str:
    """The Ray node this process runs on (a trial's results record where it ran)."""
    return ray.get_runtime_context().get_node_id()


def restart(address: str | None) -> None:
    """Disconnect (which ends this driver's actors, e.g. the trials of a failed restore) and
    connect again."""
    ray.shutdown()
    init(address)


def cluster_resources() -> dict[str, float]:
    """The CPUs and GPUs of the cluster's nodes now."""
    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def max_cluster_resources() -> dict[str, float] | None:
    """The CPUs and GPUs an autoscaling cluster can grow to, where its autoscaler reported
    them to the GCS (KubeRay, autoscaler v2); None where Ray does not know (e.g. `ray up`'s
    autoscaler v1)."""
    try:
        from ray._private.state import state
        most = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001  (a private API: absent or changed means unknown)
        return None
    return {k: float(v) for k, v in most.items() if k in ("CPU", "GPU")} if most else None


# --- one trial ---

def _trial_storage_dir() -> str:
    """The trial's folder in the run's storage (a local or shared file system)."""
    return tune.get_context().get_storage().trial_fs_path


def _load_resume(checkpoint, folder: str) -> dict | None:
    """The state to continue from: Tune's or Train's checkpoint for a restored or retried
    trial, else the newest readable checkpoint already in the trial's folder (a trial that
    a resumed search continues in its old folder), else None (a fresh start)."""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            return load_state(d)
    state = newest_state(folder)
    if state is not None:
        state["from_folder"] = True  # not Tune's: its results are not in Tune's result.json
    return state


def _quiet() -> None:
    """One line per checkpoint per epoch per trial drowns the progress output."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def one_worker_trial(params: dict) -> None:
    """A Tune function trainable: the trial's loop in this process."""
    _quiet()
    torch.set_num_threads(max(1, int(params["resources"]["cpu"])))
    use_gpu = params["resources"]["gpu"] > 0
    if use_gpu and not torch.cuda.is_available():  # never train on CPU while holding a GPU
        raise RuntimeError("the trial was given a GPU but torch sees no CUDA device here")

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:
        tune.report({**metrics, "node_id": node},
                    checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    trial_dir = _trial_storage_dir()
    run_trial(params, Session(report=report, trial_dir=trial_dir,
                              resume=_load_resume(tune.get_checkpoint(), trial_dir),
                              device=torch.device("cuda" if use_gpu else "cpu")))


def ddp_trial(params: dict) -> None:
    """A Tune function trainable that runs the trial as a TorchTrainer over several workers;
    TuneReportCallback relays rank 0's reports (already averaged over workers) to Tune.
    The Train run is named by the trial id, so a retried trial resumes the same run."""
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = params["resources"]
    trial_dir = _trial_storage_dir()
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"params": params, "trial_dir": trial_dir},
        scaling_config=train.ScalingConfig(
            num_workers=res["workers"], use_gpu=res["gpu"] > 0,
            resources_per_worker={"CPU": res["cpu"], **({"GPU": res["gpu"]} if res["gpu"]
                                                         else {})}),
        run_config=train.RunConfig(
            name="ddp", storage_path=trial_dir, callbacks=[TuneReportCallback()],
            failure_config=train.FailureConfig(max_failures=1),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1)))
    trainer.fit()


def _ddp_worker(loop_config: dict) -> None:
    import torch.distributed as dist
    from ray import train
    from ray.train.torch import get_device, prepare_model

    params = loop_config["params"]
    _quiet()
    torch.set_num_threads(max(1, int(params["resources"]["cpu"])))
    ctx = train.get_context()

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:  # rank 0's is relayed to Tune
        train.report({**metrics, "node_id": node},
                     checkpoint=train.Checkpoint.from_directory(folder) if folder else None)

    run_trial(params, Session(
        report=report, trial_dir=loop_config["trial_dir"],
        resume=_load_resume(train.get_checkpoint(),
                            os.path.join(loop_config["trial_dir"], "ddp")),
        rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=get_device(),
        wrap=lambda m: prepare_model(m, move_to_device=False),
        all_reduce=lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM)))


# --- the experiment ---

def run_experiment(run_dir: str, param_space: dict, rows: dict[str, dict], *,
                   workers: int, cpu: float, gpu: float, metric: str, mode: str,
                   scheduler: str, search_alg: str, num_samples: int, epochs: int,
                   max_concurrent: int, resume: bool, verbose: int = 0,
                   callbacks: list | None = None,
                   pairs: list[tuple[str, int, str | None]] | None = None,
                   data: dict[str, dict] | None = None):
    """Run (or, with `resume`, finish) the experiment in `run_dir`; returns whether every
    trial ended (False when the search was interrupted).

    `param_space` holds "label" (a grid over `rows`' keys, or one label for a sampled
    search), "seed" (a grid), "config" (filled in from `rows` by label unless the search
    samples it) and the search's constants. `pairs` instead runs exactly these (label, seed,
    trial folder or None) trials as a new experiment in the same run folder; a trial given its
    old folder continues from the newest checkpoint there (to repair what a restore lost).
    `data` maps the labels of rows with data options (noise) to them: the trial's "data".
    """
    if workers > 1:
        # The trial function only waits on its TorchTrainer, whose workers hold the CPUs and
        # GPUs; a bundle cannot be empty, so it asks for one byte of memory and no CPU (with
        # a CPU share, W workers x 1 CPU would never fit on a W-CPU machine).
        trainable = tune.with_resources(ddp_trial, {"cpu": 0, "memory": 1})
    else:
        trainable = tune.with_resources(one_worker_trial, {"cpu": cpu, "gpu": gpu})
    progress = _Progress(metric)
    if resume:
        tuner = tune.Tuner.restore(run_dir, trainable, resume_unfinished=True,
                                   resume_errored=True)
        tuner._local_tuner._run_config.callbacks.append(progress)  # noqa: SLF001
        tuner.fit()
        return progress.complete
    space = dict(param_space)
    if pairs:  # [label, seed, folder or None]: a trial continues in its folder if it has one
        space.update(pair=tune.grid_search([list(p) for p in pairs]),
                     label=tune.sample_from(lambda config: config["pair"][0]),
                     seed=tune.sample_from(lambda config: config["pair"][1]))
    if "config" not in space:  # explicit rows: the resolved config is looked up by label
        space["config"] = tune.sample_from(lambda config: rows[config["label"]])
    if data:  # only rows with data options: every other search's params stay as they were
        space["data"] = tune.sample_from(lambda config: data.get(config["label"]))
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, num_samples=num_samples,
        scheduler=_scheduler(scheduler, epochs),
        search_alg=_search_alg(search_alg, metric, mode),
        max_concurrent_trials=max_concurrent or None, reuse_actors=True,
        trial_dirname_creator=_dirname, trial_name_creator=_dirname)
    run_config = tune.RunConfig(
        name=os.path.basename(run_dir), storage_path=os.path.dirname(run_dir),
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), progress,
                   *(callbacks or [])],
        verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=1),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    tune.Tuner(trainable, param_space=space, tune_config=tune_config,
               run_config=run_config).fit()
    return progress.complete


class _Progress(tune.Callback):
    """One line per finished trial instead of Tune's wide status table."""

    def __init__(self, metric: str):
        self.metric, self.done, self.complete = metric, 0, False

    def on_experiment_end(self, trials, **info):
        # also called when Ctrl-C interrupts fit(), which then returns normally
        self.complete = all(t.status in ("TERMINATED", "ERROR") for t in trials)

    def _line(self, trial, what: str) -> None:
        self.done += 1
        r = trial.last_result or {}
        shown = " ".join(f"{k}={r[k]:.4g}" for k in (self.metric, "test/mse")
                         if isinstance(r.get(k), (int, float)))
        print(f"[{self.done}] {trial.config['label']} seed {trial.config['seed']}: {what}"
              f"{' at epoch ' + str(r['epoch']) if 'epoch' in r else ''} {shown}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        status = (trial.last_result or {}).get("status", "running")
        self._line(trial, "stopped early" if status == "running" else status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, f"error ({trial.error_file or 'see the trial folder'})")


def can_resume(run_dir: str) -> bool:
    return tune.Tuner.can_restore(run_dir)


def _dirname(trial) -> str:
    """Readable in TensorBoard's run list and unique by the trial id, which restore uses; a
    continued trial keeps its old folder."""
    pair = trial.config.get("pair")
    if pair and pair[2]:
        return pair[2]
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(trial.config["label"]))
    return f"{label}_seed{trial.config['seed']}_{trial.trial_id}"


def _scheduler(name: str, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    if name == "fifo":
        return FIFOScheduler()
    # rungs at epochs/9, epochs/3, epochs (reduction factor 3), counted in reported epochs
    # on the epoch, not Tune's iteration count, which restarts when a DDP trial is retried
    return ASHAScheduler(time_attr="epoch", max_t=epochs,
                         grace_period=max(1, epochs // 9), reduction_factor=3)


def describe_space(space: dict) -> dict[str, str]:
    """{field: the Optuna distribution as JSON} of a space of ray.tune domains, as
    OptunaSearch samples it (so that a report can rebuild an Optuna study from the trials)."""
    from optuna.distributions import distribution_to_json
    from ray.tune.search.optuna import OptunaSearch
    return {name: distribution_to_json(d)
            for name, d in OptunaSearch.convert_search_space(space).items()}


def _search_alg(name: str, metric: str, mode: str):
    if name == "grid":
        return None  # Tune's default: every grid point (x seeds), in order
    from ray.tune.search.optuna import OptunaSearch
    return OptunaSearch(metric=metric, mode=mode, seed=0)


__all__ = ["init", "node_id", "restart", "cluster_resources", "max_cluster_resources",
           "run_experiment", "can_resume", "describe_space", "one_worker_trial", "ddp_trial"]
