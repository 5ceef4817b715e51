"""One trial as Tune runs it: a plain function trainable for one worker, or one that starts
a TorchTrainer (DDP) over several; each hands the trial loop (engine/run/trial.py) a Session."""
from __future__ import annotations

import logging
import os

import threadpoolctl
import torch
from ray import tune

from engine.run.ray_backend.cluster import node_id
from engine.eval.tensorboard import board_dir
from engine.run.trial import Session, load_state, newest_state, run_trial
from engine.run.types import TrialSpec


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


def cpu_threads(spec: TrialSpec) -> threadpoolctl.threadpool_limits:
    """The trial's threads at its CPU allotment, deliberately (at least 1; 0.5 CPUs: 1):
    torch's intra-op pool now, and the BLAS and OpenMP pools of numpy, scipy and scikit-learn
    (the GMM, the Fréchet square root, eigh) for as long as the returned context is open.
    Ray's OMP_NUM_THREADS reaches only the pools that read it at start-up, and more threads
    than CPUs on a shared node is slower, not faster: a 2-thread eigh(2048) took 3-7x one
    thread's beside other work on a 2-core machine."""
    n = max(1, int(spec.resources.cpu))
    torch.set_num_threads(n)
    return threadpoolctl.threadpool_limits(limits=n)


def one_worker_trial(params: dict) -> None:
    """A Tune function trainable: the trial's loop in this process."""
    _quiet()
    spec = TrialSpec.from_params(params)  # bad settings fail now, before anything trains
    threads = cpu_threads(spec)
    use_gpu = spec.resources.gpu > 0
    if use_gpu and not torch.cuda.is_available():  # never train on CPU while holding a GPU
        raise RuntimeError("the trial was given a GPU but torch sees no CUDA device here")

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:
        tune.report({**metrics, "node_id": node},
                    checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    trial_dir = _trial_storage_dir()
    with threads:
        run_trial(spec, Session(report=report, trial_dir=trial_dir,
                                board=board_dir(trial_dir, spec),
                                  resume=_load_resume(tune.get_checkpoint(), trial_dir),
                                  device=torch.device("cuda" if use_gpu else "cpu")))


def ddp_trial(params: dict) -> None:
    """A Tune function trainable that runs the trial as a TorchTrainer over several workers;
    TuneReportCallback relays rank 0's reports (already averaged over workers) to Tune.
    The Train run is named by the trial id, so a retried trial resumes the same run."""
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = TrialSpec.from_params(params).resources
    trial_dir = _trial_storage_dir()
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"params": params, "trial_dir": trial_dir},
        scaling_config=train.ScalingConfig(
            num_workers=res.workers, use_gpu=res.gpu > 0,
            resources_per_worker={"CPU": res.cpu, **({"GPU": res.gpu} if res.gpu else {})}),
        run_config=train.RunConfig(
            name="ddp", storage_path=trial_dir, callbacks=[TuneReportCallback()],
            failure_config=train.FailureConfig(max_failures=1),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1)))
    trainer.fit()


def _ddp_worker(loop_config: dict) -> None:
    import torch.distributed as dist
    from ray import train
    from ray.train.torch import get_device, prepare_model

    spec = TrialSpec.from_params(loop_config["params"])
    _quiet()
    threads = cpu_threads(spec)
    ctx = train.get_context()

    node = node_id()

    def report(metrics: dict, folder: str | None) -> None:  # rank 0's is relayed to Tune
        train.report({**metrics, "node_id": node},
                     checkpoint=train.Checkpoint.from_directory(folder) if folder else None)

    with threads:
        run_trial(spec, Session(
            report=report, trial_dir=loop_config["trial_dir"],
            board=board_dir(loop_config["trial_dir"], spec),
            resume=_load_resume(train.get_checkpoint(),
                                os.path.join(loop_config["trial_dir"], "ddp")),
            rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=get_device(),
            wrap=lambda m: prepare_model(m, move_to_device=False),
            all_reduce=lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM)))


