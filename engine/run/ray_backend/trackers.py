"""--tracker: Ray Tune's own logger callbacks for MLflow, W&B and Aim, each trial one tracked
run named by its row and seed, continued by --resume in the same run."""
from __future__ import annotations

import hashlib
import json
import math
import os


from engine.run.ray_backend.progress import _stopped_by_scheduler
from engine.run import console, mlflow_store
from engine.run.tracked import search_name, trial_key
from engine.run.types import TrialSpec


def tracked_params(spec: TrialSpec) -> dict:
    """What a tracker records as a trial's hyperparameters: its row, seed, search, data set,
    budget, precision and data options, and every field of its resolved config (flat, so
    that a tracker's table has a column per field)."""
    return {"label": spec.label, "seed": spec.seed, "search": spec.search,
            "dataset": spec.dataset, "epochs": spec.epochs, "precision": spec.precision,
            "data": json.dumps(spec.data) if spec.data else "as is",
            **spec.config.to_dict()}


def tracked_metrics(result: dict) -> dict:
    """The trial's own metrics of a Tune result (train/, val/, test/, eval/, time/ and the
    epoch), not Tune's bookkeeping (trial_id, pid, config/...)."""
    return {k: v for k, v in result.items()
            if (k.split("/")[0] in ("train", "val", "test", "eval", "time", "diverged")
                or k == "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _spec(trial) -> TrialSpec:
    return TrialSpec.from_params(trial.config)


def _run_name(spec: TrialSpec) -> str:
    return f"{spec.label} seed {spec.seed}"


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
            spec, key = _spec(trial), _trial_key(run_dir, trial)
            client = self.mlflow_util._get_client()
            before = client.search_runs(  # a trial --resume continues: its run goes on
                [self.mlflow_util.experiment_id], filter_string=f"tags.trial_key = '{key}'")
            if before:
                self._trial_runs[trial] = before[0].info.run_id
                client.update_run(before[0].info.run_id, status="RUNNING")
                return
            tags = {**self.tags, "row": spec.label, "seed": str(spec.seed),
                    "run": os.path.basename(run_dir), "search": str(spec.search),
                    "dataset": spec.dataset, "trial": trial.trial_id, "trial_key": key,
                    "mlflow.parentRunId": self._search_run}
            run = self.mlflow_util.start_run(tags=tags, run_name=_run_name(spec))
            self._trial_runs[trial] = run.info.run_id
            self.mlflow_util.log_params(run_id=run.info.run_id,
                                        params_to_log=tracked_params(spec))

        def log_trial_result(self, iteration, trial, result):
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial],
                                         metrics_to_log=tracked_metrics(result),
                                         step=result.get("epoch") or iteration)

        def log_trial_end(self, trial, failed=False):
            client, run_id = self.mlflow_util._get_client(), self._trial_runs[trial]
            spec = _spec(trial)
            client.set_tag(run_id, "status", _end_status(trial, failed))
            try:  # a picture MLflow cannot take must not end the search
                # trial.path: the trial folder the trial writes (local_path is Tune's staging)
                mlflow_store.log_pictures(client, run_id, trial.path, spec.label,
                                          f"{_run_name(spec)} ({os.path.basename(run_dir)})")
            except Exception as e:  # noqa: BLE001
                print(f"MLflow: {_run_name(spec)}'s pictures not logged: "
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
            spec = _spec(trial)
            # the id stays the trial's through --resume (a new Tune trial id), so that W&B
            # continues its run rather than count a seed twice in its group
            wandb_id = hashlib.sha1(_trial_key(run_dir, trial).encode()).hexdigest()[:16]
            self._start_logging_actor(
                trial, [*self._exclude_results, *self.excludes, "config"],
                id=wandb_id, name=_run_name(spec), resume="allow", reinit=True,
                allow_val_change=True, project=self.project,
                group=f"{os.path.basename(run_dir)}/{spec.label}",
                config=_clean_log(tracked_params(spec)), dir=run_dir,
                tags=[os.path.basename(run_dir), spec.dataset],
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
            spec = _spec(trial)
            name = _run_name(spec)
            before = [r.hash for r in Repo.from_path(run_dir, init=True).structured_db.runs()
                      if r.name == name]
            run = Run(run_hash=before[0] if before else None, repo=run_dir,
                      experiment=self._experiment_name, system_tracking_interval=None,
                      capture_terminal_logs=False)
            if not before:
                run.name = name
                for tag in (spec.label, os.path.basename(run_dir), spec.dataset):
                    run.add_tag(tag)
            run["hparams"] = tracked_params(spec)
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
