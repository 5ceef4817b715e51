"""The search's console: its own lines (the header, progress, trial lines, the table) on the
terminal, and everything Ray, Tune and the trackers print (Ray's token warning and start line,
Tune's INFO lines, MLflow's database messages, the trials' forwarded output) in
<run>/search.log, unless --verbose asks for all of it on the terminal as before.

Why by swapping streams rather than by naming loggers: the noise comes from logging handlers
made at import (Ray's "ray" logger, MLflow's), from handlers made while the search runs (an
extra's logger on its first import), and from plain prints (Ray forwards a trial's output to
the driver's sys.stdout and sys.stderr, looked up when it prints). Pointing sys.stdout and
sys.stderr at the log, and every existing handler that writes to them, catches all three;
the search's own lines go to `out()` and `err()`, the terminal's streams kept aside.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path

from engine.files import LOG_FILE


_kept: list = []  # [(stdout, stderr)] of the terminal while quiet() holds, innermost last


def out():
    """Where the search's own lines go: the terminal's stdout, also inside quiet()."""
    return _kept[-1][0] if _kept else sys.stdout


def err():
    """Where the search's own errors and warnings go: the terminal's stderr."""
    return _kept[-1][1] if _kept else sys.stderr


def _handlers():
    """Every logging handler that writes to a stream (the root's and every named logger's)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


class _Log(io.TextIOBase):
    """search.log as sys.stdout and sys.stderr: a write that fails (a full disk) is dropped,
    since Ray's log thread and Tune print through it and must not die of it; the search's own
    files say what the disk cost."""

    def __init__(self, file):
        self.file = file

    def write(self, text: str) -> int:
        try:
            return self.file.write(text)
        except (OSError, ValueError):  # ValueError: closed, by a thread still printing late
            return len(text)

    def flush(self) -> None:
        try:
            self.file.flush()
        except (OSError, ValueError):
            pass

    def fileno(self) -> int:
        return self.file.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return self.file.encoding

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        super().close()


@contextlib.contextmanager
def quiet(run_dir: Path, verbose: bool = False):
    """Inside: sys.stdout, sys.stderr and the handlers that wrote to them write to
    <run_dir>/search.log (appended to, so a resume adds its own; opened without following a
    link, as every file the engine writes in a run folder). `verbose`: nothing changes."""
    try:
        fd = None if verbose else os.open(
            run_dir / LOG_FILE,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:  # a link planted there, storage turned read-only: all on the terminal
        print(f"warning: {run_dir / LOG_FILE}: {e.strerror or e}; Ray's and Tune's lines "
              "go to the terminal", file=sys.stderr, flush=True)
        fd = None
    if fd is None:
        yield
        return
    log = _Log(os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace"))
    terminal = (sys.stdout, sys.stderr)
    moved = [(h, h.stream) for h in _handlers() if h.stream in terminal]
    _kept.append(terminal)
    # Tune's new output engine prints its configuration box and "View detailed results" at
    # any verbosity; its legacy one at verbose=0 (ours) prints nothing
    output = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    sys.stdout = sys.stderr = log
    for handler, _ in moved:
        handler.setStream(log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = terminal
        _kept.pop()
        if output is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = output
        for handler, stream in moved:
            handler.setStream(stream)
        for handler in _handlers():  # made inside (an extra's logger): to the terminal now
            if handler.stream is log:
                handler.setStream(terminal[1])
        log.close()


def exit_with(code: int) -> None:
    """End a command-line process with `code` once everything is out: as at a normal exit, its
    non-daemon threads are waited for, its atexit handlers run (logging's flush, a tracker's
    end of run) and the standard streams are flushed; then the interpreter's own teardown
    (objects' finalizers, C libraries' buffers) is skipped. That teardown frees
    the objects of torch, Ray Tune and every other imported module one by one, ~1.8 s after a
    1-trial search's report on 2 cores (benchmarks/search_fixed_cost.py), and leaves nothing
    behind: the run's files are written atomically and closed, Ray is stopped before the
    report. For a script's `__main__` (and the console script) only: a caller in the same
    process (a test, a notebook) calls `main()` and gets the code back."""
    import atexit
    import threading
    # CPython's own first steps of an exit: wait for the non-daemon threads (and the work queued
    # to thread pools), then the atexit handlers
    wait_for_threads = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if wait_for_threads is None or run_exitfuncs is None:  # another interpreter: its own exit
        sys.exit(code)
    wait_for_threads()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)
