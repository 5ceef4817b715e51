"""Reading a run folder into DataFrames: the search's description (load_search), one row per
trial (load_trials: its config, status, epochs, error, the metrics of its last result line and
whether its curves had flattened), every per-epoch metric (load_curves), and the damaged trial
folders the report leaves out (damaged_trials). Trials come in search.json's row order (match_row
finds a trial's row), then seed. Only the files the engine writes are read: search.json, each
trial's params.json, result.json, error.txt and the scheduler's stop mark, and a later
evaluation's files (engine/report/evaluations.py).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from engine.convergence import WATCHED, still_moving
from engine.files import STOPPED_FILE
from engine.report import evaluations
from engine.trial_files import lines_problem, params_problem, read_lines

CURVE_COLUMNS = ["trial", "label", "seed", "epoch", "metric", "value"]


class NotARunFolder(ValueError):
    """The folder has no readable search.json; the message is one line."""


def load_search(run_dir) -> dict:
    """The search's description (search.json): name, dataset, epochs, seeds, rows, paper, ..."""
    path = Path(run_dir) / "search.json"
    if not path.is_file():
        raise NotARunFolder(f"{run_dir} is not a run folder (no search.json); give the folder a "
                            "search wrote, the one holding search.json and a sub-folder per trial")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NotARunFolder(f"{path} cannot be read as JSON ({e})") from None


def row_seeds(search: dict) -> dict:
    """search.json's "row_seeds" (--resume --more-seeds: label -> its seeds, for the rows
    given more than "seeds"), {} where it has none or none readable."""
    more = search.get("row_seeds")
    return more if isinstance(more, dict) else {}


def load_trials(run_dir) -> pd.DataFrame:
    """One row per trial: trial, trial_id, label, seed, config/<field>..., status, epochs_done,
    error, the metrics of its last reported line (val/mse, test/psnr, ...), time_total_s.
    Sorted by the search's row order, then seed."""
    run = Path(run_dir)
    search = load_search(run)
    records, left_out = [], []
    for folder, params, lines in _read_trials(run, search, left_out):
        last = evaluations.merged(folder, lines[-1] if lines else {})  # and its evaluation.json
        config = params.get("config") or {}
        epochs_done = _epoch(last) if last else 0
        error = _error_message(folder / "error.txt")
        records.append({
            "trial": folder.name, "trial_id": last.get("trial_id"),
            "label": _label(params, folder), "seed": params.get("seed"),
            **{f"config/{k}": _scalar(v) for k, v in config.items()},
            "status": _status(last, error is not None, (folder / STOPPED_FILE).is_file()),
            "epochs_done": epochs_done, "error": error,
            "diverged_at_epoch": last.get("diverged_at_epoch"),
            "end_reason": last.get("end_reason"),  # --epochs auto: plateau or cap
            **(converged(lines, search) if last.get("status") == "completed"
               else {"converged": None, "still_moving": None}),
            "eval_notes": json.dumps(last["notes"]) if isinstance(last.get("notes"), dict)
            else None,
            evaluations.KEY: last.get(evaluations.KEY),
            **_metrics(last),
            "time_total_s": number(last.get("time_total_s")),
        })
    # columns in a fixed order: trials report different metrics (test/ only at the end)
    found = list(dict.fromkeys(k for r in records for k in r))
    metrics = sorted(k for k in found if "/" in k and not k.startswith("config/"))
    columns = ["trial", "trial_id", "label", "seed",
               *[k for k in found if k.startswith("config/")],
               "status", "epochs_done", "error", "diverged_at_epoch", "end_reason", "converged",
               "still_moving", *metrics, "time_total_s", "eval_notes", evaluations.KEY]
    trials = pd.DataFrame.from_records(records, columns=columns)
    trials.attrs["left_out"] = left_out  # damaged trial folders, one line each
    return trials


def load_curves(run_dir) -> pd.DataFrame:
    """Every per-epoch numeric metric of every trial, long: trial, label, seed, epoch, metric,
    value (null and NaN reports are kept as NaN)."""
    run = Path(run_dir)
    rows = [(folder.name, _label(params, folder), params.get("seed"), _epoch(line), metric, value)
            for folder, params, lines in _read_trials(run, load_search(run))
            for line in lines for metric, value in _metrics(line).items()]
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS).astype({"epoch": int, "value": float})
    # a restored trial reports again the epochs after its last checkpoint: the later one counts
    return curves.drop_duplicates(["trial", "epoch", "metric"], keep="last", ignore_index=True)


def _read_trials(run: Path, search: dict, left_out: list[str] | None = None
                 ) -> list[tuple[Path, dict, list[dict]]]:
    """(folder, params, result lines) of every trial, in the search's row order, then seed.
    A trial whose params.json or result lines are damaged (engine/trial_files.py) is left out,
    one line naming its file and field appended to `left_out`."""
    trials = []
    for folder in _trial_dirs(run):
        try:
            params = json.loads((folder / "params.json").read_text())
        except (OSError, ValueError):
            continue  # a trial that is starting right now has not finished writing it
        lines = read_lines(folder / "result.json")
        for name, problem in (("params.json", params_problem(params)),
                              ("result.json", None if not isinstance(params, dict)
                               else lines_problem(lines, search.get("metric", "val/mse")))):
            if problem:
                if left_out is not None:
                    left_out.append(f"{folder / name}: {problem}")
                break
        else:
            trials.append((folder, params, lines))
    rows = search.get("rows") or []

    def order(item):
        folder, params, _ = item
        seed = params.get("seed")
        return (match_row(_label(params, folder), params.get("config") or {}, rows)[0],
                str(_label(params, folder)), (seed is None, seed if seed is not None else 0),
                folder.name)
    return sorted(trials, key=order)


def damaged_trials(run_dir) -> list[str]:
    """One line per trial folder whose params.json or result.json is damaged (file, field)."""
    run = Path(run_dir)
    left_out: list[str] = []
    _read_trials(run, load_search(run), left_out)
    return left_out


def _trial_dirs(run: Path) -> list[Path]:
    """The folders that hold a params.json, outermost only (a trial's own sub-folders, such as
    checkpoints, are not trials), whatever Tune named them."""
    found = []
    for root, dirs, files in os.walk(run):
        if Path(root) != run and "params.json" in files:
            found.append(Path(root))
            dirs.clear()
        elif Path(root) == run and "report" in dirs:
            dirs.remove("report")
    return found


def _error_message(path: Path) -> str | None:
    """The last non-empty line of error.txt (a traceback ends with the exception)."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "error (error.txt is empty)"


def _status(last: dict, errored: bool, stopped: bool) -> str:
    reported = last.get("status")
    if reported in ("completed", "diverged"):
        return reported
    if errored:
        return "error"
    if stopped:
        return "stopped early"  # the scheduler (ASHA) stopped it: engine/ray_backend
    return "unfinished"  # the search is running or was interrupted


def _metrics(line: dict) -> dict[str, float]:
    """The namespaced numbers of one result line ("val/mse", "test/psnr", ...); Tune's own
    fields have no "/", and a nested config would come flattened as "config/..."."""
    return {k: number(v) for k, v in line.items()
            if "/" in k and not k.startswith("config/") and (v is None or _is_number(v))}


def _epoch(line: dict) -> int:
    return int(line.get("epoch", line.get("training_iteration", 0)) or 0)


def _label(params: dict, folder: Path) -> str:
    return params.get("label") or (params.get("config") or {}).get("name") or folder.name


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(v) -> float:
    """A JSON value as a float, NaN where it is not a number (null, text, a bool)."""
    return float(v) if _is_number(v) else math.nan


def _scalar(v):
    """A config value as a table cell: lists and dicts as JSON text, so rows can be grouped."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def same(a, b) -> bool:
    """Equal, numbers to a relative 1e-9 (a config's float as search.json and params.json
    each wrote it)."""
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def match_row(label, config: dict, rows: list[dict]) -> tuple[int, bool]:
    """The trial's position among search.json's rows and whether its config is the row's:
    the row of the same label and the same value of every field both configs have, so two
    rows that share a label (a beta sweep) stay apart; else the first row of the label (a
    sampled search varies its row's config); else after all rows."""
    of_label = [i for i, row in enumerate(rows) if row.get("label") == label]
    for i in of_label:
        if all(same(_scalar(v), _scalar(config[k]))
               for k, v in (rows[i].get("config") or {}).items() if k in config):
            return i, True
    return (of_label[0], False) if of_label else (len(rows), False)


def converged(lines: list[dict], search: dict) -> dict:
    """converged (True, False, or None where under 2 epochs report what is watched) and
    still_moving (JSON {name: relative change} of what had not flattened, else None), by the
    rule --epochs auto stops at (engine/convergence.py), a metric past its best counting as
    converged where the search stops early (search.json's early_stopping)."""
    by_epoch = {_epoch(line): line for line in lines}  # a restored epoch: its later line
    epochs = sorted(e for e in by_epoch if e > 0)
    metric = search.get("metric")
    history = {name: [by_epoch[e].get(name) for e in epochs]
               for name in dict.fromkeys((metric, *WATCHED))}
    moving = still_moving(history, metric, search.get("mode") or "min",
                          early_stopping=bool(search.get("early_stopping")))
    if moving is None:
        return {"converged": None, "still_moving": None}
    moving = {name: round(change, 4) for name, change in moving.items()}
    return {"converged": not moving, "still_moving": json.dumps(moving) if moving else None}
