"""A run's and a trial's identity in the experiment trackers (MLflow, W&B, Aim): read from
the run folder alone, so that the driver's callbacks, the export and a trial worker agree
without importing the command line or the run-folder code."""
from __future__ import annotations

import json
import os
from pathlib import Path


def search_name(run_dir) -> str:
    """The search's name, from its search.json (a tracker's experiment or project)."""
    try:
        return json.loads(Path(run_dir, "search.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        return os.path.basename(run_dir)


def trial_key(run_dir, trial_folder) -> str:
    """A trial's tracked run's identity across --resume, which continues a trial in its old
    folder under a new Tune trial id: the run folder's and the trial folder's names."""
    return f"{os.path.basename(run_dir)}/{os.path.basename(str(trial_folder))}"
