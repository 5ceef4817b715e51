"""A search's run folder: where a new run goes (claimed atomically) or which one a resume
finishes, and its search.json read back with its shape checked."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.run.cli import Flags, check_storage
from engine.run.types import BadInput, Search
from engine.files import LOCK_FILE, LOG_FILE, lock_holder_line


ROOT = Path(__file__).resolve().parents[2]


def run_folder(search: Search, flags: Flags) -> Path:
    """--out, else <storage>/<search>-<dataset>-<n>: with --resume the latest n (checked to be
    a run folder); else the path a new run will claim (claim_run_folder)."""
    if flags.out:
        out = Path(flags.out).expanduser().resolve()
        if not flags.resume:
            check_storage(str(out), "--out")  # its parent exists, it is writable
    else:
        # the working directory's runs/, never the installed package's folder
        runs = Path(flags.storage) if flags.storage else Path.cwd() / "runs"
        taken = _taken(runs, search.name, flags.dataset)
        if flags.resume and not taken:
            raise BadInput(f"--resume: no run of {search.name} on {flags.dataset} in {runs}; "
                           "pass --out <run folder>")
        n = taken[-1] if flags.resume else (taken[-1] + 1 if taken else 1)
        out = runs / f"{search.name}-{flags.dataset}-{n}"
    if flags.resume:
        if not (out / "search.json").is_file():
            raise BadInput(f"--resume: {out} is not a run folder (no search.json)")
        from engine.files import link_problem
        problem = link_problem(out)
        if problem:  # --resume rewrites result.json, progress.csv, checkpoints, report/
            raise BadInput(f"--resume: {problem}")
        saved = read_search_json(out)
        workers = saved.get("resources", {}).get("workers", 1)
        if workers != flags.workers_per_trial:  # a different trainable cannot continue it
            raise BadInput(f"--resume: {out} ran with --workers-per-trial {workers}; pass the "
                           "same")
    elif out.exists() and any(out.iterdir()):
        if (out / "search.json").is_file():
            raise BadInput(f"--out {out} already holds a run; pass --resume to finish it or "
                           "choose another folder")
        names = sorted(p.name for p in out.iterdir())
        raise BadInput(f"--out {out} is not empty and holds no run ({len(names)} entries: "
                       f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); choose "
                       "an empty or new folder")
    return out


def _taken(runs: Path, name: str, dataset: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(name)}-{re.escape(dataset)}-(\d+)$")
    return sorted(int(m[1]) for p in (runs.iterdir() if runs.is_dir() else [])
                  if (m := pattern.match(p.name)))


CLAIM = {"claimed": True}  # search.json until the search writes its own (one Ray started)


def claim_run_folder(search: Search, flags: Flags, out: Path) -> Path:
    """Take the new run's folder atomically, so that two searches started at once never share
    one: a numbered folder is made with mkdir (never exist_ok), the next number if another
    search made it first; then search.json is created exclusively (O_EXCL), which also decides
    between two searches given the same --out. BadInput on a folder that cannot be written
    (read-only or full file system, no permission)."""
    try:
        if flags.out:
            out.mkdir(exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    out.mkdir()
                    break
                except FileExistsError:
                    n = int(out.name.rsplit("-", 1)[1]) + 1
                    out = out.parent / f"{search.name}-{flags.dataset}-{n}"
        fd = os.open(out / "search.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump(CLAIM, f)
    except FileExistsError:
        raise BadInput(f"--out {out}: another search took this folder just now; choose "
                       "another") from None
    except OSError as e:  # EROFS, ENOSPC, EACCES, ...
        raise BadInput(f"{'--out' if flags.out else 'the run folder'} {out}: cannot be "
                       f"written ({e.strerror or e}); free space or choose a writable "
                       "folder (--out, --storage)") from None
    return out




def lock_run_folder(out: Path) -> int:
    """Hold an exclusive lock on the run folder for the rest of this process (the kernel lets
    go of it when the process ends, however it ends, so a killed search leaves no stale lock):
    a fresh search and a --resume alike, so that two processes never train, merge or report
    one run at once (two --resume together trained a trial twice and lost another's epochs).
    fcntl.flock on <out>/run.lock (on NFS v4 Linux takes it as a byte-range lock the server
    enforces). BadInput naming the holder (its host, PID and start) where another holds it.
    Returns the lock's file descriptor, to be kept open."""
    import fcntl
    import socket
    import time
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:  # a link planted there (ELOOP), no permission, ...
        raise BadInput(f"{path}: cannot open the run's lock ({e.strerror or e}); a run folder "
                       f"holds {LOCK_FILE} as a plain file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise BadInput(f"{out} is in use by another search ({holder}); wait until it ends, or "
                       "stop it, then --resume") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, lock_holder_line(os.getpid(), socket.gethostname(),
                                   time.strftime('%Y-%m-%d %H:%M:%S')).encode(), 0)
    return fd


def release_run_folder(out: Path) -> None:
    """Give back a claimed folder that no search ran in (Ray did not start, ...)."""
    try:
        if json.loads((out / "search.json").read_text()) == CLAIM:
            (out / "search.json").unlink()
            (out / LOCK_FILE).unlink(missing_ok=True)
            (out / LOG_FILE).unlink(missing_ok=True)  # Ray's lines before it gave up
            out.rmdir()
    except (OSError, ValueError):
        pass


def read_search_json(out: Path) -> dict:
    """A run folder's search.json, or BadInput (one line) if it does not parse or has not
    the shape a search writes (an object with a data set, epochs, seeds and rows)."""
    path = out / "search.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"--resume: {path} is unreadable ({e}); it is written "
                       "atomically, so it was changed by hand: restore it") from None
    if saved == CLAIM:
        raise BadInput(f"--resume: {path} was claimed by a search that never started (Ray "
                       "did not start, or its driver died at once); start a new run")
    problem = _search_json_problem(saved)
    if problem:
        raise BadInput(f"--resume: {path} is not a search's record ({problem}); it was "
                       "changed by hand: restore it")
    return saved


def _search_json_problem(saved) -> str | None:
    """What is wrong with the shape of a search.json, or None."""
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not an object"
    for key, kind in (("dataset", str), ("epochs", int), ("seeds", list), ("rows", list)):
        if not isinstance(saved.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if not saved["rows"]:
        return "'rows' is empty"
    if not all(isinstance(r, dict) and isinstance(r.get("label"), str)
               and isinstance(r.get("config"), dict) for r in saved["rows"]):
        return "a row is not {\"label\": ..., \"config\": {...}}"
    if not saved["seeds"] or not all(isinstance(x, int) for x in saved["seeds"]):
        return "'seeds' is not a list of integers"
    row_seeds = saved.get("row_seeds", {})
    if not (isinstance(row_seeds, dict) and all(
            isinstance(v, list) and v and all(type(x) is int for x in v)
            for v in row_seeds.values())):
        return "'row_seeds' is not an object of rows' lists of integers"
    stray = set(row_seeds) - {r["label"] for r in saved["rows"]}
    if stray:
        return f"'row_seeds' names {sorted(stray)[0]!r}, which is not one of its rows"
    if not isinstance(saved.get("resources", {}), dict):
        return "'resources' is not an object"
    if saved["epochs"] < 1:  # the command line's own check of --epochs / --max-epochs
        return f"'epochs' is {saved['epochs']}, not a whole number >= 1"
    min_epochs = saved.get("min_epochs", 0)
    if not (isinstance(min_epochs, int) and min_epochs >= 0):
        return f"'min_epochs' is {min_epochs!r}, not a whole number >= 0"
    if saved.get("evaluation") is not None:
        from engine.eval.settings import EvalSettings
        try:  # an unknown evaluation group, density or setting: EvalSettings' own message
            EvalSettings.from_dict(saved["evaluation"])
        except (TypeError, ValueError, AttributeError) as e:
            return f"'evaluation': {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None
