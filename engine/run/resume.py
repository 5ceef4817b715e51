"""--resume: finish an interrupted run from its own files (search.json, the trials' folders
and checkpoints), never from Tune's pickled state; and merge a continued trial's results."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

from engine.eval.tensorboard import board_dir, forget_driver_end
from engine.files import STOPPED_FILE, write_text_atomic
from engine.run import console
from engine.run.trial import LINES_FILE
from engine.run.types import TrialSpec
from engine.trial_files import read_lines


def resume(out: Path, spec, experiment) -> str:
    """Finish an interrupted run from its own files only: every trial of the grid that is
    missing, unfinished or errored continues from the newest checkpoint in its folder (loaded
    weights_only); a sampled run's unfinished trials likewise, then the samples it still owes,
    drawn by a searcher told the finished trials. Tune's own saved state (pickles, which would
    run their writer's code) is never read. Returns "complete", "interrupted" or "terminated"."""
    if spec.algorithm == "grid":
        todo = _trials_to_repair(out, {label: spec.seeds_of(label) for label in spec.configs})
        owed = 0
    else:
        todo, told, owed = _sampled_to_continue(out, spec.samples, spec.metric)
    print(f"resume: {len(todo)} trial(s) to finish"
          + (f", {owed} more to sample" if owed else "")
          + (": " + ", ".join(f"{label} seed {seed}" for label, seed, *_ in todo)
             if todo and spec.algorithm == "grid" else ""), flush=True, file=console.out())
    outcome = "complete"
    if todo:
        folders = [out / p[2] for p in todo if p[2]]
        for folder in folders:
            if (folder / "error.txt").exists():
                (folder / "error.txt").replace(folder / "error-before-resume.txt")
                _forget_failure(folder)  # its TensorBoard "failure": it goes on now
            (folder / STOPPED_FILE).unlink(missing_ok=True)
            # Tune rewrites result.json with the new epochs: the earlier lines wait on disk
            # (a driver killed during the resume loses nothing; the next resume merges them)
            if (folder / "result.json").exists() and not (folder / BEFORE_RESUME).exists():
                (folder / "result.json").replace(folder / BEFORE_RESUME)
        try:
            outcome = experiment(search_alg="grid", num_samples=1, pairs=todo)
        finally:
            for folder in folders:
                with contextlib.suppress(OSError):  # a full disk: the next resume merges
                    merge_results(folder)
    if owed and outcome == "complete":
        _, told, owed = _sampled_to_continue(out, spec.samples, spec.metric)
        outcome = experiment(search_alg=spec.algorithm, num_samples=owed, told=told)
    return outcome


def _sampled_to_continue(out: Path, samples: int, metric: str):
    """A sampled run's unfinished trials as [label, seed, folder, their sampled config], the
    finished ones' ({"config/<field>": value}, last value of `metric`) for the searcher, and
    how many samples are still owed."""
    from engine.report import load_trials
    trials = load_trials(out)
    todo, told = [], []
    for _, t in trials.iterrows():
        spec = TrialSpec.from_params(json.loads((out / t["trial"] / "params.json").read_text()))
        sampled = spec.params["config"]  # the config as the searcher sampled it
        if t["status"] in ("completed", "diverged", "stopped early"):
            value = t.get(metric)
            told.append(({f"config/{k}": v for k, v in sampled.items()},
                         None if value is None or not math.isfinite(value) else float(value)))
        else:
            todo.append([spec.label, spec.seed, t["trial"], sampled])
    return todo, told, max(0, samples - len(trials))


BEFORE_RESUME = "result-before-resume.json"


def _trials_to_repair(out: Path, rows: dict[str, tuple[int, ...]]) -> list[list]:
    """[label, seed, trial folder or None, None] of the grid's trials (`rows`: label -> its
    seeds) a resume must finish:
    those without a folder, and those neither completed, diverged nor stopped by the
    scheduler (unfinished or errored), each from its folder with the most epochs. A (row,
    seed) with any ended folder is left alone."""
    from engine.report import load_trials
    trials = load_trials(out)
    repair = []
    for label, seeds in rows.items():
        for seed in seeds:
            mine = trials[(trials["label"] == label) & (trials["seed"] == seed)]
            if mine["status"].isin(["completed", "diverged", "stopped early"]).any():
                continue
            if mine.empty:
                repair.append([label, seed, None, None])
                continue
            best = mine.sort_values("epochs_done", ascending=False)
            repair.append([label, seed, best["trial"].iloc[0], None])
    return repair


def merge_results(folder: Path) -> None:
    """Put a continued trial's earlier result lines (kept in BEFORE_RESUME) before its new
    ones (those before its first new epoch), each epoch once (a retried trial's later line
    wins; unreadable lines, from a driver killed mid-write, are dropped), fill the epochs
    that neither holds from the trial's own lines in its newest checkpoint (those a killed
    driver had received but not written), and write its progress.csv again from them, with
    the columns of its header."""
    old_path, new_path = folder / BEFORE_RESUME, folder / "result.json"
    if not old_path.exists():
        return
    old, new = read_lines(old_path), read_lines(new_path)
    first = new[0].get("epoch", 0) if new else float("inf")
    by_epoch = {}
    for line in _checkpoint_lines(folder) + old:  # the driver's lines win over the trial's
        if line.get("epoch", 0) < first:
            by_epoch[line.get("epoch", 0)] = line
    lines = [by_epoch[e] for e in sorted(by_epoch)]
    by_epoch = {}
    for line in lines + new:
        by_epoch.pop(line.get("epoch", 0), None)  # the later line wins, in its place
        by_epoch[line.get("epoch", 0)] = line
    lines = list(by_epoch.values())
    write_text_atomic(new_path, "".join(json.dumps(x) + "\n" for x in lines))
    _write_progress_csv(folder / "progress.csv", lines)
    old_path.unlink()


def _checkpoint_lines(folder: Path) -> list[dict]:
    """The result lines held by the trial's checkpoint with the latest epoch (LINES_FILE)."""
    held = [read_lines(p) for p in folder.glob(f"checkpoint_*/{LINES_FILE}")]
    return max(held, key=lambda x: max((y.get("epoch", 0) for y in x), default=0),
               default=[])


def _write_progress_csv(path: Path, lines: list[dict]) -> None:
    """progress.csv of `lines` with the columns of its existing header (else of the first
    line), nested values flattened as Tune's CSV logger does ("config/beta")."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            else:
                out[f"{prefix}{k}"] = v
        return out
    rows = [flat({k: v for k, v in x.items() if k != "config"}) for x in lines]
    header = None
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    header = header or (list(rows[0]) if rows else [])
    text = io.StringIO()
    writer = csv.DictWriter(text, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _forget_failure(folder: Path) -> None:
    """Remove the driver's TensorBoard failure of a trial that goes on: in its board
    (board_dir), and in <trial>/tensorboard, where a run from before the boards had it."""
    forget_driver_end(str(folder / "tensorboard"))
    try:
        params = json.loads((folder / "params.json").read_text())
        forget_driver_end(board_dir(str(folder), TrialSpec.from_params(params)))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no params: the trial never started, so no failure was written for it
