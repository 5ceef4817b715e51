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

from ray import tune

from engine.run.ray_backend.cluster import (  # noqa: F401
    JOIN_TIMEOUT_S, TOKEN_FILE, cluster_resources, init, map_tasks, max_cluster_resources,
    make_token_file, node_id, private_token_file, shutdown)
from engine.run.ray_backend.experiment import (  # noqa: F401
    OnFirstTrial, _Interrupt, describe_space, disk_full, grid, param_space, read_only,
    run_experiment, space_corners)
from engine.run.ray_backend.progress import PROGRESS_EVERY_S, _Progress, _trial_count  # noqa: F401
from engine.run.ray_backend.trackers import (  # noqa: F401
    _aim, _mlflow, _trial_key, _wandb, tracked_metrics, tracked_params, tracker_callbacks)
from engine.run.ray_backend.trainables import (  # noqa: F401
    cpu_threads, ddp_trial, one_worker_trial)
from engine.run.stopper import PlateauStopper

# --epochs auto's rule, a Tune Stopper by registration (engine/run/stopper.py imports no Ray);
# the trainable asks it itself, so that the trial evaluates its last epoch (stopper.py)
tune.Stopper.register(PlateauStopper)

__all__ = ["init", "shutdown", "node_id", "cluster_resources", "max_cluster_resources",
           "map_tasks", "run_experiment", "param_space", "describe_space", "space_corners",
           "one_worker_trial", "ddp_trial", "private_token_file", "make_token_file",
           "tracker_callbacks",
           "OnFirstTrial"]
