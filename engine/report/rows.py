"""The ablation table's rows and count columns: which trials each row holds (row_groups: the
trials grouped by label and every config field but the seed, in search.json's row order, with
the rows no trial has reached), the name each row is shown by, the floor row's name, and the
trial statuses counted beside the means. The table, its notes and figures all read the rows
from here, so a trial is in the same row everywhere.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from engine.report.read import match_row

# status -> the table's count column
COUNTS = {"diverged": "diverged", "stopped early": "stopped early", "error": "errors",
          "unfinished": "unfinished"}
# A completed trial has converged when its curves have flattened (engine/convergence.py, the
# rule --epochs auto stops at). A trial cut short by its budget is compared with the others
# as if it had finished; the table counts such trials and a note names them, so a reader knows
# which places may still change.
NOT_CONVERGED = "not converged"
FLOOR_ROW = "real data"  # the table's floor row (FID and KID of real images)


def row_groups(trials: pd.DataFrame, search: dict) -> list[dict]:
    """The table's rows: trials grouped by label and every config field (not the seed), plus
    the search's rows that no trial has reached yet, in the search's row order. Each is a dict:
    name (shown), label, config, index (the trials' index labels), row (position in
    search.json's rows), exact (its config is that row's)."""
    config_cols = [c for c in trials.columns if c.startswith("config/")]
    found: dict[tuple, dict] = {}
    for i, row in trials.iterrows():
        values = [None if _missing(row[c]) else row[c] for c in config_cols]
        key = (row["label"], *values)
        if key not in found:
            config = {c[len("config/"):]: v for c, v in zip(config_cols, values) if v is not None}
            found[key] = {"label": row["label"], "config": config, "index": []}
        found[key]["index"].append(i)
    rows = search.get("rows") or []
    groups = list(found.values())
    for g in groups:
        g["row"], g["exact"] = match_row(g["label"], g["config"], rows)
    reached = {g["row"] for g in groups}
    groups += [{"label": row.get("label"), "config": row.get("config") or {}, "index": [],
                "row": i, "exact": True} for i, row in enumerate(rows) if i not in reached]
    groups.sort(key=lambda g: g["row"])  # stable: unmatched groups keep their first appearance
    for g, name in zip(groups, _row_names([(g["label"], g["config"]) for g in groups])):
        g["name"] = name
    return groups


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _row_names(rows: list[tuple[str, dict]]) -> list[str]:
    """Each row's label, plus the config fields that tell apart rows sharing it: a beta sweep
    of "VAE" reads "VAE (beta=0.5)", "VAE (beta=1)"."""
    names = []
    for label, config in rows:
        twins = [c for other, c in rows if other == label]
        fields = sorted(set().union(*twins)) if len(twins) > 1 else []
        differ = [k for k in fields if len({json.dumps(c.get(k), default=str) for c in twins}) > 1]
        shown = ", ".join(f"{k}={short(config.get(k))}" for k in differ)
        names.append(f"{label} ({shown})" if shown else str(label))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # still equal only if their configs are: number them
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} [{seen[name]}]"
    return names


def short(v) -> str:
    """A config value or seed as a row's name and the status lines show it (1.0 as "1")."""
    return f"{v:g}" if isinstance(v, float) else str(v)
