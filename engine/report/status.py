"""`vae-ablations status RUN`: every trial of a running or finished run, one line each, read
from the run folder alone, so that another terminal, or another node on the shared storage,
can follow a search: its row, seed, state, epochs, latest search metric and time.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd

from engine.report.read import load_search, load_trials, row_seeds
from engine.files import LOCK_FILE, parse_lock_holder


def search_state(run: Path) -> str:
    """"finished", "running (<holder>)" where the search holding the run's lock is alive on
    this host, "running on <host> or interrupted (<holder>)" for another host's, else
    "interrupted (--resume finishes it)". Read, never locked: a status must not be the process
    that makes a starting search find its folder in use."""
    if (run / "finished.json").is_file():
        return "finished"
    try:
        holder = (run / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        holder = ""
    parsed = parse_lock_holder(holder)
    if parsed is not None:
        pid, host = parsed
        if host != socket.gethostname():
            return f"running on {host} or interrupted ({holder})"
        try:
            os.kill(pid, 0)
            return f"running ({holder})"
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            return f"running ({holder})"
    return "interrupted (--resume finishes it)"


def status_text(run_dir) -> str:
    """The run's state, then a table of its trials in the search's row order (an unfinished
    trial is "running" while its search runs), then the damaged trial folders, then the trials
    of the grid not started yet."""
    run = Path(run_dir)
    search, trials = load_search(run), load_trials(run)
    state = search_state(run)
    metric = search.get("metric", "val/mse")
    cap = search.get("epochs")
    live = state.startswith("running (")
    rows = [{"row": t["label"], "seed": t["seed"],
             "state": "running" if live and t["status"] == "unfinished" else t["status"],
             "epochs": f"{int(t['epochs_done'])}/{cap}" if cap else int(t["epochs_done"]),
             metric: t.get(metric), "time (s)": t.get("time_total_s"), "trial": t["trial"]}
            for _, t in trials.iterrows()]
    table = pd.DataFrame(rows, columns=["row", "seed", "state", "epochs", metric, "time (s)",
                                        "trial"])
    lines = [f"{run}: {search.get('name', 'search')} on {search.get('dataset')}; search {state}",
             table.to_string(index=False, float_format=lambda v: f"{v:.4g}",
                             na_rep="—") if len(table) else "no trial has started yet"]
    lines += [f"damaged, left out: {x}" for x in trials.attrs.get("left_out", [])]
    started = {(t["row"], t["seed"]) for t in rows}
    more = row_seeds(search)  # --more-seeds
    grid = [(r.get("label"), s) for r in search.get("rows") or [] for s in
            more.get(r.get("label"), search.get("seeds") or [])
            ] if search.get("search", "grid") == "grid" else []
    waiting = [f"{label} seed {seed}" for label, seed in grid if (label, seed) not in started]
    if waiting:
        lines.append(f"not started: {len(waiting)} ({', '.join(waiting)})")
    return "\n".join(lines)
