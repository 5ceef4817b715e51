"""Every Ray call of the engine, so that the next change of Ray's API moves one package:
cluster (Ray itself), trainables (one trial), experiment (a search), trackers, progress.

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

from ray import tune  # noqa: E402

from engine.run.ray_backend.cluster import (  # noqa: E402,F401
    JOIN_TIMEOUT_S, TOKEN_FILE, cluster_resources, init, map_tasks, max_cluster_resources,
    node_id, private_token_file, shutdown)
from engine.run.ray_backend.experiment import (  # noqa: E402,F401
    _Interrupt, describe_space, disk_full, grid, param_space, read_only, run_experiment,
    space_corners)
from engine.run.ray_backend.progress import PROGRESS_EVERY_S, _Progress, _trial_count  # noqa: E402,F401
from engine.run.ray_backend.trackers import (  # noqa: E402,F401
    _aim, _mlflow, _trial_key, _wandb, tracked_metrics, tracked_params, tracker_callbacks)
from engine.run.ray_backend.trainables import (  # noqa: E402,F401
    cpu_threads, ddp_trial, one_worker_trial)
from engine.run.stopper import PlateauStopper  # noqa: E402

# --epochs auto's rule, a Tune Stopper by registration (engine/run/stopper.py imports no Ray);
# the trainable asks it itself, so that the trial evaluates its last epoch (stopper.py)
tune.Stopper.register(PlateauStopper)

__all__ = ["init", "shutdown", "node_id", "cluster_resources", "max_cluster_resources",
           "map_tasks", "run_experiment", "param_space", "describe_space", "space_corners",
           "one_worker_trial", "ddp_trial", "private_token_file", "tracker_callbacks"]
