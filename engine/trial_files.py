"""A trial folder's own files as the report and --resume read them: params.json (what the trial
was given) and its result lines (result.json, and the lines a checkpoint keeps), each checked
with the command line's own rules, so that a hand-edited or damaged file is one line naming
the file and the field rather than a traceback (or a table that silently takes epochs -5).
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path

# what the driver and the trial write in every result line, with the kind each must be
_LINE_FIELDS = {"epoch": "count", "training_iteration": "count", "diverged_at_epoch": "count",
                "restored_from_epoch": "count", "status": str, "end_reason": str,
                "trial_id": str, "notes": dict, "time_total_s": "number"}


def read_lines(path: Path) -> list[dict]:
    """The JSON lines of a result file (result.json, a checkpoint's lines.jsonl), [] if there
    is none (json accepts the NaN token); an unreadable line, the half-written last line of a
    running trial or of a process killed mid-write, is dropped."""
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def params_problem(params) -> str | None:
    """What is wrong with a trial's params.json, as the command line would say it, or None.
    Keys an older run did not write may be absent; config fields this version dropped are
    left alone (an old run still reports), the others checked as a config on the command
    line is (models.Config: its types and ranges)."""
    if not isinstance(params, dict):
        return f"a JSON {type(params).__name__}, not an object"
    for key in ("label", "dataset", "metric"):
        if key in params and not isinstance(params[key], str):
            return f"{key!r} is {params[key]!r}, not text"
    if "seed" in params and not _count(params["seed"]):
        return f"'seed' is {params['seed']!r}, not a whole number >= 0"
    if "epochs" in params and not (_count(params["epochs"]) and params["epochs"] >= 1):
        return f"'epochs' is {params['epochs']!r}, not a whole number >= 1"
    if "min_epochs" in params and not _count(params["min_epochs"]):
        return f"'min_epochs' is {params['min_epochs']!r}, not a whole number >= 0"
    config = params.get("config", {})
    if not isinstance(config, dict):
        return f"'config' is a JSON {type(config).__name__}, not an object"
    import models  # torch: only where a trial's config is checked (engine.report stays light)
    known = {f.name for f in dataclasses.fields(models.Config)}
    try:
        models.Config.from_dict({k: v for k, v in config.items() if k in known})
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        return f"'config': {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


def lines_problem(lines: list[dict], metric: str = "val/mse") -> str | None:
    """What is wrong with a trial's result lines (the first bad field, with its line's number
    from 1), or None: each field the engine writes of the kind it writes; each metric (a key
    with "/") a number, null, or a text saying why it was not computed, which the report
    counts as missing; the search's own `metric`, which the scheduler and --resume read, a
    number or null."""
    for n, line in enumerate(lines, 1):
        for key, kind in _LINE_FIELDS.items():
            value = line.get(key)
            if value is None:
                continue
            if kind == "count" and not _count(value):
                return f"line {n}: {key!r} is {value!r}, not a whole number >= 0"
            if kind == "number" and not _number(value):
                return f"line {n}: {key!r} is {value!r}, not a number"
            if isinstance(kind, type) and not isinstance(value, kind):
                return f"line {n}: {key!r} is {value!r}, not {_KIND_NAMES[kind]}"
        for key, value in line.items():
            if "/" in key and not key.startswith("config/") and not (
                    value is None or _number(value) or (isinstance(value, str)
                                                        and key != metric)):
                return f"line {n}: {key!r} is {value!r}, not a number"
    return None


_KIND_NAMES = {str: "text", dict: "an object"}


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
