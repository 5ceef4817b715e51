"""--tracker mlflow beyond its Tune callback (engine/run/ray_backend/trackers.py _mlflow): where a run's
MLflow data lives, the search's own MLflow run, and the files MLflow receives. No Ray here: the
search's end (the report) and `vae-ablations export` log to the same runs.

Without $MLFLOW_TRACKING_URI the runs are in <run>/mlflow.db and their files in
<run>/mlartifacts; with it (a tracking server) the server's artifact store holds the files.
- the search: one run named after the run folder (tag `search_run`), the parent of every
  trial's run (MLflow's UI nests them under it), holding the report's files under `report/`;
- a trial: its pictures under `pictures/` at its end (qualitative.png, drawn from the
  qualitative.npz it saved, and that file), and `model/`, the folder `vae-ablations export`
  wrote of it, where it was exported.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from engine.run.tracked import search_name, trial_key

ARTIFACTS = "mlartifacts"


def tracking_uri(run_dir) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir}/mlflow.db"


def artifact_location(run_dir) -> str | None:
    """The experiment's artifact location: in the run folder beside mlflow.db (MLflow's
    default is the working directory's mlruns/); a tracking server's own otherwise."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return str(Path(run_dir).resolve() / ARTIFACTS)


def client_and_experiment(run_dir):
    """(MlflowClient, the search's experiment id) of a run folder, the experiment created
    (its artifacts in the run folder) where there is none yet."""
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri(run_dir))
    name = search_name(run_dir)
    found = client.get_experiment_by_name(name)
    experiment = found.experiment_id if found else client.create_experiment(
        name, artifact_location=artifact_location(run_dir))
    return client, experiment


def search_run(client, experiment_id: str, run_dir) -> str:
    """The id of the search's own run (a --resume and the report find it again by its tag),
    created where there is none."""
    name = Path(run_dir).name
    found = client.search_runs([experiment_id], filter_string=f"tags.search_run = '{name}'")
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=name,
                             tags={"search_run": name, "run": name}).info.run_id


def trial_run(client, experiment_id: str, run_dir, trial_folder) -> str | None:
    """The id of a trial's run (by its trial_key tag), or None."""
    key = trial_key(run_dir, trial_folder)
    found = client.search_runs([experiment_id], filter_string=f"tags.trial_key = '{key}'")
    return found[0].info.run_id if found else None


def log_pictures(client, run_id: str, trial_dir, row: str, title: str) -> None:
    """A trial's pictures (engine/eval/qualitative.py's qualitative.npz, where it saved them)
    under pictures/: the file, and drawn as the report draws a row (qualitative.png: one
    band named by its `row`, under `title`)."""
    from engine.report import qualitative  # matplotlib: once a trial has ended
    strips = qualitative.load_strips(trial_dir)
    if strips is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp, "qualitative.png")
        qualitative.figure([(row, strips)], title).savefig(png, dpi=200)
        client.log_artifact(run_id, str(png), "pictures")
    client.log_artifact(run_id, str(Path(trial_dir, qualitative.FILE)), "pictures")


def log_report(run_dir, finished: bool) -> None:
    """The report's files (<run>/report/) under report/ of the search's run, which ends
    FINISHED, or KILLED where the search was interrupted (a --resume reopens it)."""
    client, experiment = client_and_experiment(run_dir)
    run_id = search_run(client, experiment, run_dir)
    client.log_artifacts(run_id, str(Path(run_dir, "report")), "report")
    client.set_terminated(run_id, "FINISHED" if finished else "KILLED")


def log_export(run_dir, trial_folder, export_dir) -> str | None:
    """An exported folder under model/ of its trial's run; the run's id, or None where the
    trial has no run."""
    client, experiment = client_and_experiment(run_dir)
    run_id = trial_run(client, experiment, run_dir, trial_folder)
    if run_id is not None:
        client.log_artifacts(run_id, str(export_dir), "model")
    return run_id
