"""Atomic file writes (a crash never leaves a half-written file, only the old one or the new),
the names of the files the engine's parts share, and where a machine's caches live.

Files get the mode an ordinary open() would give them (0666 less the umask): `mkstemp` makes
its file 0600 whatever the umask, which would hide a run's reports from the rest of a research
group on shared storage, beside the checkpoints Ray writes with the umask's mode."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

# In a trial's folder: the scheduler (ASHA) stopped the trial before its last epoch; written by
# the driver (engine/ray_backend), read by the report and --resume (which never rerun it)
STOPPED_FILE = "stopped.json"

# In a run folder: who holds the search's lock, for as long as that search's process lives;
# written by engine/run/folder.py, read by `vae-ablations status` (which never takes the lock)
LOCK_FILE = "run.lock"
# In a run folder: what Ray, Tune and the trackers printed (engine/run/console.py)
LOG_FILE = "search.log"
# In a run folder: every trial's TensorBoard events, <row>/seed<k> under it
# (engine/eval/tensorboard.py board_dir)
BOARDS = "tensorboard"

# In a trial's folder: `vae-ablations evaluate`'s later evaluation of the trial (its metrics,
# settings and epoch), or why the latest one failed; written by engine/reevaluate.py, merged
# into the table by engine/report/evaluations.py (result.json stays what the trial reported)
EVALUATION_FILE = "evaluation.json"
EVALUATION_FAILED_FILE = "evaluation_failed.json"

# The folder of a machine's caches, shared by its trials: decoded data sets (engine/data/cache.py)
# and the evaluation's classifiers, reference statistics and floors (engine/eval/metrics)
CACHE_ENV = "VAE_ABLATIONS_CACHE"


def cache_dir() -> Path:
    """Where per-machine caches live: $VAE_ABLATIONS_CACHE, else ~/.cache/vae-ablations."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vae-ablations")


def lock_holder_line(pid: int, host: str, since: str) -> str:
    """The text a search writes into its run's lock file: "pid <n> on <host>, since <time>"."""
    return f"pid {pid} on {host}, since {since}\n"


def parse_lock_holder(text: str) -> tuple[int, str] | None:
    """(pid, host) from a lock file's text written by `lock_holder_line`, else None."""
    words = text.split()
    if len(words) >= 4 and words[0] == "pid" and words[1].isdigit() and words[2] == "on":
        return int(words[1]), words[3].rstrip(",")
    return None


def umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc), else by
    setting and restoring it (not atomic against another thread creating files meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temp file in the same folder, then os.replace it over `path`
    (atomic on POSIX within one file system), so no reader sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# a run folder's sub-folders that the trackers write themselves (W&B links wandb/latest-run
# there) and the engine never rewrites
TRACKER_FOLDERS = ("wandb", ".aim")


def first_link(folder: str | Path) -> Path | None:
    """The first symbolic link inside `folder`, or `folder` itself where it is one (its tree
    walked without following links, the trackers' own TRACKER_FOLDERS left out), else None. A
    run folder holds none of the engine's, so one there was planted (shared storage) and
    writing "into" it would write through it, outside the run."""
    folder = Path(folder)
    if folder.is_symlink():
        return folder
    for top, dirs, names in os.walk(folder, followlinks=False):
        if Path(top) == folder:
            dirs[:] = [d for d in dirs if d not in TRACKER_FOLDERS or
                       os.path.islink(os.path.join(top, d))]
        for name in sorted(dirs) + sorted(names):
            if os.path.islink(os.path.join(top, name)):
                return Path(top, name)
    return None


def link_problem(folder: str | Path) -> str | None:
    """One line on the first link in `folder` (first_link), else None."""
    link = first_link(folder)
    if link is None:
        return None
    return (f"{link} is a symbolic link (to {os.readlink(link)}); a run folder holds none, and "
            "the engine writes nothing through one: remove it")
