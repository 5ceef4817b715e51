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

import errno
import os

# Our own TensorBoard writer logs richer summaries than Tune's automatic TBX logger, so the
# automatic loggers are off and the JSON/CSV ones (which the reports read) are added back.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative paths keep meaning the repo's
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
# Checkpointing every epoch with num_to_keep forces a small experiment-state snapshot each
# time (so a restore never points at a deleted checkpoint); it costs ~10 ms, so no warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ctrl-C is ours (run_experiment's _Interrupt): Tune's own handler ends the run as if it had
# finished, and nothing after fit() could tell an interrupted search from a complete one
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
# Ray starts its workers, i.e. our trials, at nice 15: beside any busy process of normal
# priority a trial gets about 1/30 of a core (a 2-seed search on a 2-node test cluster took
# 31 s, 249 s with two busy loops beside it). The trials are the work the user asked for, so
# they run at the user's priority unless RAY_worker_niceness says otherwise. It reaches the
# raylets that this process starts (ray.init, ray.cluster_utils.Cluster), not a joined cluster.
os.environ.setdefault("RAY_worker_niceness", "0")

import csv  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402
import threadpoolctl  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.files import STOPPED_FILE, write_json_atomic  # noqa: E402
from engine.run import console, mlflow_store  # noqa: E402
from engine.eval.tensorboard import board_dir, end_session  # noqa: E402
from engine.run.tracked import search_name, trial_key  # noqa: E402
from engine.run.stopper import PlateauStopper  # noqa: E402
from engine.run.trial import Session, load_state, newest_state, run_trial  # noqa: E402
from engine.run.types import RunSpec  # noqa: E402

# --epochs auto's rule, a Tune Stopper by registration (engine/run/stopper.py imports no Ray);
# the trainable asks it itself, so that the trial evaluates its last epoch (stopper.py)
tune.Stopper.register(PlateauStopper)


def init(address: str | None, give_up=None) -> None:
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
        # ray.init can wait for minutes on an address where a GCS answered the probe but
        # does not let this driver in; one line and exit 2 instead
        timer = threading.Timer(JOIN_TIMEOUT_S, _give_up, args=(address, give_up))
        timer.daemon = True
        timer.start()
        try:
            ray.init(address=address, log_to_driver=True)
        finally:
            timer.cancel()
        return
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        print(f"warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: Ray's ports on this "
              "machine accept anyone who reaches them; unset it to keep token authentication",
              file=console.err(), flush=True)
    # "local": a new Ray on this machine, even where $RAY_ADDRESS names a cluster (e.g. the
    # job API's tunnel that docs/cluster.md exports for `ray job submit`)
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    private_token_file()


def shutdown() -> None:
    """Leave Ray: its log thread is joined, so no trial process's last words, which Ray
    forwards to this driver's stderr as they arrive, can come after the driver's own last line
    (on a busy machine they came seconds late, after "the disk is full")."""
    ray.shutdown()


TOKEN_FILE = Path("~/.ray/auth_token")


def private_token_file(path: Path = TOKEN_FILE) -> None:
    """Ray writes the token it makes on first use with the umask's mode (0644): anyone on the
    machine could read it and so pass the authentication. Make it the owner's alone."""
    path = path.expanduser()
    try:
        if path.is_file() and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
    except OSError as e:  # e.g. a token file of another user's: say so, go on
        print(f"warning: cannot make {path} private ({e.strerror}): chmod 600 it",
              file=console.err(), flush=True)


JOIN_TIMEOUT_S = float(os.environ.get("VAE_ABLATIONS_JOIN_TIMEOUT_S", "120"))


def _give_up(address: str, cleanup=None) -> None:
    if cleanup is not None:  # e.g. give back the run folder the search claimed
        cleanup()
    print(f"error: --address {address}: Ray did not let this driver join within "
          f"{JOIN_TIMEOUT_S:g} s; check that it is the head's GCS address (ray status there "
          "prints it) and that this machine reaches every port of the head",
          file=console.err(), flush=True)
    os._exit(2)  # noqa: SLF001  (ray.init holds the main thread; nothing has started)


def node_id() -> str:
    """The Ray node this process runs on (a trial's results record where it ran)."""
    return ray.get_runtime_context().get_node_id()


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


def map_tasks(fn, calls: list[tuple], cpu: float = 1.0, gpu: float = 0.0, done=None) -> list:
    """fn(*args) for each args of `calls`, each a Ray Task of `cpu` CPUs and `gpu` GPUs, so a
    cluster runs them in parallel on its nodes as their resources allow. The results in the
    order of `calls`; a task whose worker died gives its exception instead, so one failure
    costs only its own result. done(i, result) is called as each finishes."""
    remote = ray.remote(num_cpus=cpu, num_gpus=gpu)(fn)
    index = {remote.remote(*args): i for i, args in enumerate(calls)}
    results: list = [None] * len(calls)
    pending = list(index)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                results[index[ref]] = ray.get(ref)
            except ray.exceptions.RayError as e:  # the worker or its node was lost
                results[index[ref]] = e
            if done is not None:
                done(index[ref], results[index[ref]])
    return results


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


def cpu_threads(params: dict) -> threadpoolctl.threadpool_limits:
    """The trial's threads at its CPU allotment, deliberately (at least 1; 0.5 CPUs: 1):
    torch's intra-op pool now, and the BLAS and OpenMP pools of numpy, scipy and scikit-learn
    (the GMM, the Fréchet square root, eigh) for as long as the returned context is open.
    Ray's OMP_NUM_THREADS reaches only the pools that read it at start-up, and more threads
    than CPUs on a shared node is slower, not faster: a 2-thread eigh(2048) took 3-7x one
    thread's beside other work on a 2-core machine (issue 15)."""
    n = max(1, int(params["resources"]["cpu"]))
    torch.set_num_threads(n)
    return threadpoolctl.threadpool_limits(limits=n)


def one_worker_trial(params: dict) -> None:
    """A Tune function trainable: the trial's loop in this process."""
    _quiet()
    threads = cpu_threads(params)
    use_gpu = params["resources"]["gpu"] > 0
    if use_gpu and not torch.cuda.is_available():  # never train on CPU while holding a GPU
        raise RuntimeError("the trial was given a GPU but torch sees no CUDA device here")

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:
        tune.report({**metrics, "node_id": node},
                    checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    trial_dir = _trial_storage_dir()
    with threads:
        run_trial(params, Session(report=report, trial_dir=trial_dir,
                                  board=board_dir(trial_dir, params),
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
    threads = cpu_threads(params)
    ctx = train.get_context()

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:  # rank 0's is relayed to Tune
        train.report({**metrics, "node_id": node},
                     checkpoint=train.Checkpoint.from_directory(folder) if folder else None)

    with threads:
        run_trial(params, Session(
            report=report, trial_dir=loop_config["trial_dir"],
            board=board_dir(loop_config["trial_dir"], params),
            resume=_load_resume(train.get_checkpoint(),
                                os.path.join(loop_config["trial_dir"], "ddp")),
            rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=get_device(),
            wrap=lambda m: prepare_model(m, move_to_device=False),
            all_reduce=lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM)))


# --- the experiment ---

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
    progress, interrupt = _Progress(metric, epochs, _trial_count(space, num_samples),
                                    auto=space.get("budget") == "auto"), \
        _Interrupt()
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode, num_samples=num_samples,
        scheduler=_scheduler(spec.scheduler, epochs),
        search_alg=_search_alg(search_alg, metric, mode, told),
        max_concurrent_trials=max_concurrent or None, reuse_actors=True,
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


# --- experiment trackers: Ray Tune's own logger callbacks, each trial one tracked run ---

def tracked_params(params: dict) -> dict:
    """What a tracker records as a trial's hyperparameters: its row, seed, search, data set,
    budget, precision and data options, and every field of its resolved config (flat, so
    that a tracker's table has a column per field)."""
    return {"label": params["label"], "seed": params["seed"],
            "search": params.get("search"), "dataset": params["dataset"],
            "epochs": params["epochs"], "precision": params.get("precision", "fp32"),
            "data": json.dumps(params["data"]) if params.get("data") else "as is",
            **params["config"]}


def tracked_metrics(result: dict) -> dict:
    """The trial's own metrics of a Tune result (train/, val/, test/, eval/, time/ and the
    epoch), not Tune's bookkeeping (trial_id, pid, config/...)."""
    return {k: v for k, v in result.items()
            if (k.split("/")[0] in ("train", "val", "test", "eval", "time", "diverged")
                or k == "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _run_name(trial) -> str:
    return f"{trial.config['label']} seed {trial.config['seed']}"


def _end_status(trial, failed: bool) -> str:
    """A tracked run's status at its trial's end: the trial's own (completed, diverged), or
    "stopped early" / "unfinished" where ASHA or an interrupt ended it before its last
    epoch, or "error"."""
    status = "error" if failed else (trial.last_result or {}).get("status", "")
    if status == "running":
        status = "stopped early" if _stopped_by_scheduler(trial) else "unfinished"
    return status


def _trial_key(run_dir: str, trial) -> str:
    return trial_key(run_dir, trial.local_path or trial.path or trial.trial_id)


def tracker_callbacks(names, run_dir: str) -> list:
    """The callbacks of --tracker's names, each writing next to the run (MLflow: the
    tracking server of $MLFLOW_TRACKING_URI, else <run>/mlflow.db; W&B: <run>/wandb; Aim:
    <run>/.aim): one tracked run per trial, named "<row> seed <n>", with tracked_params as
    its hyperparameters and tracked_metrics every epoch (the last are the final metrics)."""
    return [{"mlflow": _mlflow, "wandb": _wandb, "aim": _aim}[name](run_dir)
            for name in names]


def _mlflow(run_dir: str):
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # the optional extra

    class MLflow(MLflowLoggerCallback):
        """Ray's MLflow callback with a run per trial named by its row and seed, tagged with
        the row (`row`), seed, run folder, search and data set, and only the trial's own
        params and metrics (Ray's logs every key of the trial's config and result); each a
        child of the search's run, its pictures logged at its end (engine/run/mlflow_store.py:
        the experiment, its artifact location and the files)."""

        def setup(self, *args, **kwargs):
            # the experiment made first, with its artifact location: Ray's would take MLflow's
            client, experiment = mlflow_store.client_and_experiment(run_dir)
            super().setup(*args, **kwargs)
            self._search_run = mlflow_store.search_run(client, experiment, run_dir)
            client.update_run(self._search_run, status="RUNNING")  # a --resume reopens it

        def log_trial_start(self, trial):
            if trial in self._trial_runs:  # a retried trial goes on in its run
                return
            c, key = trial.config, _trial_key(run_dir, trial)
            client = self.mlflow_util._get_client()
            before = client.search_runs(  # a trial --resume continues: its run goes on
                [self.mlflow_util.experiment_id], filter_string=f"tags.trial_key = '{key}'")
            if before:
                self._trial_runs[trial] = before[0].info.run_id
                client.update_run(before[0].info.run_id, status="RUNNING")
                return
            tags = {**self.tags, "row": c["label"], "seed": str(c["seed"]),
                    "run": os.path.basename(run_dir), "search": str(c.get("search")),
                    "dataset": c["dataset"], "trial": trial.trial_id, "trial_key": key,
                    "mlflow.parentRunId": self._search_run}
            run = self.mlflow_util.start_run(tags=tags, run_name=_run_name(trial))
            self._trial_runs[trial] = run.info.run_id
            self.mlflow_util.log_params(run_id=run.info.run_id,
                                        params_to_log=tracked_params(c))

        def log_trial_result(self, iteration, trial, result):
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial],
                                         metrics_to_log=tracked_metrics(result),
                                         step=result.get("epoch") or iteration)

        def log_trial_end(self, trial, failed=False):
            client, run_id = self.mlflow_util._get_client(), self._trial_runs[trial]
            client.set_tag(run_id, "status", _end_status(trial, failed))
            try:  # a picture MLflow cannot take must not end the search
                # trial.path: the trial folder the trial writes (local_path is Tune's staging)
                mlflow_store.log_pictures(client, run_id, trial.path, _run_name(trial))
            except Exception as e:  # noqa: BLE001
                print(f"MLflow: {_run_name(trial)}'s pictures not logged: "
                      f"{type(e).__name__}: {e}", file=console.err())
            super().log_trial_end(trial, failed)

    return MLflow(tracking_uri=mlflow_store.tracking_uri(run_dir),
                  experiment_name=search_name(run_dir))


def _wandb(run_dir: str):
    from ray.air.integrations.wandb import WandbLoggerCallback, _clean_log  # the extra

    class Wandb(WandbLoggerCallback):
        """Ray's W&B callback with a run per trial named by its row and seed, grouped by
        "<run folder>/<row>" so that W&B bands the row's seeds, its config tracked_params,
        its history tracked_metrics; run files in <run>/wandb (offline: `wandb sync` them)."""

        def log_trial_start(self, trial):
            c = trial.config
            # the id stays the trial's through --resume (a new Tune trial id), so that W&B
            # continues its run rather than count a seed twice in its group
            wandb_id = hashlib.sha1(_trial_key(run_dir, trial).encode()).hexdigest()[:16]
            self._start_logging_actor(
                trial, [*self._exclude_results, *self.excludes, "config"],
                id=wandb_id, name=_run_name(trial), resume="allow", reinit=True,
                allow_val_change=True, project=self.project,
                group=f"{os.path.basename(run_dir)}/{c['label']}",
                config=_clean_log(tracked_params(c)), dir=run_dir,
                tags=[os.path.basename(run_dir), c["dataset"]],
                # Ray passes only the API key to the logging actor: on a cluster the
                # driver's offline mode would not reach it otherwise
                **({"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}),
                **self.kwargs)

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {
                **tracked_metrics(result), "training_iteration": result.get("epoch")
                or iteration})

    return Wandb(project=os.environ.get("WANDB_PROJECT") or search_name(run_dir))


def _aim(run_dir: str):
    from aim import Repo, Run
    from ray.tune.logger.aim import AimLoggerCallback  # the optional extra

    class Aim(AimLoggerCallback):
        """Ray's Aim callback with a run per trial in <run>/.aim named by its row and seed,
        tagged with the row, run folder and data set, its hparams tracked_params, its
        metrics tracked_metrics at each epoch; a trial --resume continues goes on in its run
        (found by its name, which a row and seed make unique in the run folder's repository).
        No system metrics or terminal capture: the callback lives in the driver, whose CPU
        and output are not the trial's."""

        def log_trial_start(self, trial):
            if trial in self._trial_to_run:  # a retried trial goes on in its run
                return
            c, name = trial.config, _run_name(trial)
            before = [r.hash for r in Repo.from_path(run_dir, init=True).structured_db.runs()
                      if r.name == name]
            run = Run(run_hash=before[0] if before else None, repo=run_dir,
                      experiment=self._experiment_name, system_tracking_interval=None,
                      capture_terminal_logs=False)
            if not before:
                run.name = name
                for tag in (c["label"], os.path.basename(run_dir), c["dataset"]):
                    run.add_tag(tag)
            run["hparams"] = tracked_params(c)
            run["trial_key"], run["trial_id"] = _trial_key(run_dir, trial), trial.trial_id
            self._trial_to_run[trial] = run

        def log_trial_result(self, iteration, trial, result):
            run, step = self._trial_to_run[trial], result.get("epoch") or iteration
            for metric, value in tracked_metrics(result).items():
                # as Ray's Aim callback does, a diverged epoch's NaN is left out; the run's
                # status says "diverged"
                if math.isfinite(value):
                    run.track(value, name=metric, step=step)

        def log_trial_end(self, trial, failed=False):
            self._trial_to_run[trial]["status"] = _end_status(trial, failed)
            super().log_trial_end(trial, failed)

    return Aim(repo=run_dir, experiment_name=search_name(run_dir))


# Ray's loggers that report a trial's or the driver's failure to write: on a full disk each
# repeats the same ENOSPC traceback (hundreds of lines); the driver says it once instead
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


PROGRESS_EVERY_S = 60.0  # a progress line at least this often while trials run (no terminal)


def _terminal_width(stream) -> int:
    """The columns of the terminal `stream` writes to; 0 where it is none or one without a
    size (`script -c`, a CI log's pseudo-terminal), where a tqdm bar prints nothing at all."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress(tune.Callback):
    """The search's progress instead of Tune's wide status table: a line per finished trial,
    then where the search stands,

        progress: 5 of 16 done, 2 running, 9 pending, 0 failed; 1m05s elapsed, ~3m28s left

    after every finished trial and every PROGRESS_EVERY_S while trials run. Done counts the
    trials that ended by themselves or by the scheduler (completed, diverged, stopped early),
    failed those that ended in an error. The time left is an estimate: the elapsed time scaled
    by the trial-epochs still owed over those done (a finished trial's whole budget counts as
    done, so ASHA's stops shorten it), each trial's evaluation not counted apart. Under an
    auto budget (`auto`: `epochs` is the cap) a trial owes, once some have ended, the mean of
    the epochs those ended at, not the cap they mostly stop far short of. On a terminal a tqdm
    bar shows the same and the trial lines are printed above it."""

    def __init__(self, metric: str, epochs: int, total: int, stream=None,
                 clock=time.monotonic, every: float = PROGRESS_EVERY_S, auto: bool = False):
        self.metric, self.epochs, self.total, self.auto = metric, epochs, total, auto
        # the terminal is looked up when a line is printed, and the bar made at the first
        # step: Tune pickles its callbacks when the experiment starts, and a stream other
        # than sys.stdout itself (console.quiet() swaps it) does not pickle
        self._stream = stream
        self.clock, self.every = clock, every
        self.done = self.failed = 0
        self.ended: set[int] = set()  # id() of the trials counted (Tune marks them later)
        self.complete = False
        self.start = self.last_line = clock()
        self.trials: list = []
        self.bar = None
        self._bar_tried = False

    @property
    def stream(self):
        return self._stream or console.out()

    def on_step_begin(self, iteration, trials, **info):
        if not self._bar_tried:
            self._bar_tried = True
            if _terminal_width(self.stream):
                self.bar = tqdm(total=self.total, unit="trial", file=self.stream,
                                dynamic_ncols=True, desc="trials")

    def on_step_end(self, iteration, trials, **info):
        self.trials = trials
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts(), refresh=False)
            self.bar.refresh()
        elif self.clock() - self.last_line >= self.every and self._running():
            self._progress_line()

    def on_experiment_end(self, trials, **info):
        # every trial ended by itself, by an error or by the scheduler (never by an interrupt)
        self.complete = all(t.status == "ERROR" or _ended(t) for t in trials)
        if self.bar is not None:
            self.bar.close()

    def _running(self) -> list:
        return [t for t in self.trials if t.status == "RUNNING" and id(t) not in self.ended]

    def _counts(self) -> str:
        running = len(self._running())
        pending = max(0, self.total - self.done - self.failed - running)
        return (f"{self.done} of {self.total} done, {running} running, {pending} pending, "
                f"{self.failed} failed")

    def _left(self, elapsed: float) -> str:
        finished = self.done + self.failed
        # a trial --resume continued had its first epochs done before this session began
        restored = sum((t.last_result or {}).get("restored_from_epoch") or 0
                       for t in self.trials)
        running = sum((t.last_result or {}).get("epoch", 0) or 0 for t in self._running())
        ended = [(t.last_result or {}).get("epoch", 0) or 0 for t in self.trials
                 if id(t) in self.ended]
        if self.auto and ended:  # each trial to its plateau: as long as those ended took
            owed = self.total * sum(ended) / len(ended) - restored
            done = sum(ended) - restored + running
        else:
            owed = self.total * self.epochs - restored
            done = finished * self.epochs - restored + running
        if finished == self.total:
            return "none left"
        if done <= 0:
            return "time left not yet known"
        return f"~{_duration(elapsed * max(owed - done, 0) / done)} left"

    def _progress_line(self) -> None:
        self.last_line = self.clock()
        elapsed = self.last_line - self.start
        self._print(f"progress: {self._counts()}; {_duration(elapsed)} elapsed, "
                    f"{self._left(elapsed)}")

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, trial, what: str, failed: bool = False) -> None:
        self.ended.add(id(trial))
        self.done += not failed
        self.failed += failed
        r = trial.last_result or {}
        shown = " ".join(f"{k}={r[k]:.4g}" for k in (self.metric, "test/mse")
                         if isinstance(r.get(k), (int, float)))
        self._print(f"[{self.done + self.failed}] {trial.config['label']} seed "
                    f"{trial.config['seed']}: {what}"
                    f"{' at epoch ' + str(r['epoch']) if 'epoch' in r else ''} {shown}".rstrip())
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts(), refresh=False)
            self.bar.update(1)
        else:
            self._progress_line()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials = trials
        status = (trial.last_result or {}).get("status", "running")
        if status in ("completed", "diverged"):
            self._line(trial, status)
        elif _stopped_by_scheduler(trial):
            self._line(trial, "stopped early")
        # else: stopped by an interrupt, unfinished: the driver says so once

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials = trials
        self._line(trial, f"error ({trial.error_file or 'see the trial folder'})", failed=True)
        if trial.path is not None:  # its process could not say so: TensorBoard's failure
            try:
                end_session(board_dir(trial.path, trial.config), "error")
            except OSError as e:  # a full disk, a lost mount: the search goes on without it
                print(f"tensorboard: the failure of {trial} not written: {e}",
                      file=console.err())


def _trial_count(space: dict, num_samples: int) -> int:
    """How many trials a param space makes: num_samples times every grid's size."""
    count = num_samples
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            count *= len(value["grid_search"])
    return count


def _ended(trial) -> bool:
    return ((trial.last_result or {}).get("status") in ("completed", "diverged")
            or _stopped_by_scheduler(trial))


def _stopped_by_scheduler(trial) -> bool:
    return trial.path is not None and os.path.exists(os.path.join(trial.path, STOPPED_FILE))


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


__all__ = ["init", "node_id", "cluster_resources", "max_cluster_resources",
           "run_experiment", "describe_space", "one_worker_trial", "ddp_trial",
           "private_token_file"]
