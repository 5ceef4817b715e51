"""Later evaluations in the report: what `vae-ablations evaluate` (engine/reevaluate.py) wrote
into a trial's folder after its search, merged over the metrics of the trial's last result
line (result.json itself stays what the trial reported), and the notes that tell a reader
which of the table's metrics came from such an evaluation, with which settings, and whose
evaluation failed or was left out.
"""
from __future__ import annotations

import json
import numbers
from pathlib import Path

import pandas as pd

from engine.files import EVALUATION_FAILED_FILE, EVALUATION_FILE

KEY = "later_evaluation"  # trials.csv's column: what was merged into the row, as JSON text
# metrics the evaluation writes beside each FID: the table adds a FID's KID (and fidz, kidz)
# after it itself; the rest stay in trials.csv, or the fid group alone would add 40 columns
BESIDE_FID = ("eval/kid_", "eval/kidz_", "eval/fidz_", "eval/floor_", "eval/precision_",
              "eval/recall_", "eval/is_")


def merged(folder: Path, last: dict) -> dict:
    """The trial's last result line with its later evaluation merged in: the evaluation's
    metrics over the line's of the same names, its notes over the line's (a line's note on a
    metric or group evaluated again is dropped: it no longer holds), and KEY, JSON text of
    what was merged ("metrics", "settings", "epoch"), of why the file was left out
    ("left_out"), and of the latest evaluation's failure ("failed"). `last` as it is where
    the trial has neither file."""
    info: dict = {}
    failed = _read(folder / EVALUATION_FAILED_FILE)
    if isinstance(failed, dict):
        info["failed"] = str(failed.get("error", "the file says no more"))
    evaluation = _read(folder / EVALUATION_FILE)
    if evaluation is None:
        return {**last, KEY: json.dumps(info)} if info else last
    problem = _problem(evaluation, last)
    if problem:
        return {**last, KEY: json.dumps({**info, "left_out": problem})}
    metrics = {k: v for k, v in evaluation.items() if "/" in k and _is_metric(v)}
    settings = evaluation.get("settings") if isinstance(evaluation.get("settings"), dict) else {}
    again = set(metrics) | set(settings.get("metrics") or [])
    said = evaluation.get("notes") if isinstance(evaluation.get("notes"), dict) else {}
    notes = {k: v for k, v in (last.get("notes") or {}).items() if k not in again}
    info.update(metrics=list(metrics), settings=settings, epoch=evaluation["epoch"])
    return {**last, **metrics, "notes": {**notes, **said}, KEY: json.dumps(info)}


def table_metrics(trials: pd.DataFrame, declared: list[str]) -> list[str]:
    """The search's table metrics, then those a later evaluation added (asked for by name, so
    shown), in the evaluation's order, without the ones written beside each FID."""
    added = [m for info in _infos(trials) for m in info.get("metrics", ())
             if not m.startswith(("time/", *BESIDE_FID))]
    return list(dict.fromkeys([*declared, *added]))


def notes(trials: pd.DataFrame, search: dict, metrics: list[str]) -> list[str]:
    """One note per set of later evaluations run alike (its groups and the settings that
    differ from the search's): which of the table's metrics it gave, for how many of the
    completed trials; then one per trial whose evaluation failed or was left out."""
    alike: dict[str, list] = {}  # how it was run -> [trials, metrics]
    problems = []
    for trial, info in zip(trials["trial"], _infos(trials, keep_empty=True)):
        if "metrics" in info:
            how = _how(info["settings"], search.get("evaluation") or {})
            entry = alike.setdefault(how, [0, {}])
            entry[0] += 1
            entry[1].update(dict.fromkeys(info["metrics"]))
        if "left_out" in info:
            problems.append(f"{trial}/{EVALUATION_FILE} is left out of the table: "
                            f"{info['left_out']}.")
        if "failed" in info:
            problems.append(f"the later evaluation (vae-ablations evaluate) of {trial} failed "
                            f"({info['failed']}); "
                            + ("its cells are from the earlier one." if "metrics" in info
                               else "its cells are the trial's own."))
    done = int((trials["status"] == "completed").sum()) if len(trials) else 0
    sources = []
    for how, (n, names) in alike.items():
        shown = [m for m in metrics if m in names]
        rest = sum(not m.startswith("time/") and m not in shown for m in names)
        sources.append(f"{', '.join(shown) or 'none of the table metrics'}"
                       + (f" (and {rest} more in trials.csv)" if rest else "")
                       + f": from a later evaluation (vae-ablations evaluate, {how}) of {n} of "
                       f"the {done} completed trials, at their last epoch, over what they "
                       "reported.")
    return sources + problems


def _how(settings: dict, searched: dict) -> str:
    """The groups and the settings that differ from the search's own evaluation."""
    groups = ",".join(settings.get("metrics") or []) or "no group"
    differ = [f"{k}={_text(v)} (the search's: {_text(searched[k])})"
              for k, v in settings.items() if k != "metrics" and k in searched
              and searched[k] != v]
    return (f"groups {groups}; "
            + (f"settings as the search's but {', '.join(differ)}" if differ
               else "the search's other settings"))


def _text(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _infos(trials: pd.DataFrame, keep_empty: bool = False) -> list[dict]:
    """KEY's JSON of each trial ({} where it has none, kept in place where keep_empty)."""
    column = trials[KEY] if KEY in trials else pd.Series([None] * len(trials), dtype=object)
    infos = [json.loads(v) if isinstance(v, str) else {} for v in column]
    return infos if keep_empty else [i for i in infos if i]


def _read(path: Path):
    """The JSON of `path`; None where there is no such file; {"unreadable": why} where it
    cannot be read (a half-copied file)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"unreadable": f"{type(e).__name__}: {e}"}


def _problem(evaluation, last: dict) -> str | None:
    """Why an evaluation file cannot be merged into the trial's row, or None."""
    if not isinstance(evaluation, dict):
        return "not a JSON object"
    if "unreadable" in evaluation:
        return f"unreadable ({evaluation['unreadable']})"
    epoch = evaluation.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool)):
        return f"its 'epoch' is {epoch!r}, not a whole number"
    if not last:
        return "the trial reported no epoch to merge it into"
    reported = last.get("epoch", last.get("training_iteration"))
    if epoch != reported:  # the table's row is the model at its last epoch
        return f"it evaluated epoch {epoch}, not the trial's last ({reported})"
    bad = next((k for k, v in evaluation.items() if "/" in k and not (_is_metric(v)
                                                                      or isinstance(v, str))),
               None)
    return f"{bad!r} is {evaluation[bad]!r}, not a number" if bad else None


def _is_metric(v) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
