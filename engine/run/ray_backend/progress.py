"""The search's progress on the console: a line per finished trial and where the search
stands, at least once a minute; a tqdm bar on a terminal with a size."""
from __future__ import annotations

import os
import time

from ray import tune
from tqdm import tqdm

from engine.files import STOPPED_FILE
from engine.run import console
from engine.eval.tensorboard import board_dir, end_session
from engine.run.types import TrialSpec


PROGRESS_EVERY_S = 60.0  # a progress line at least this often while trials run (no terminal)


def _terminal_width(stream) -> int:
    """The columns of the terminal `stream` writes to; 0 where it is none or one without a
    size (`script -c`, a CI log's pseudo-terminal), where a tqdm bar prints nothing at all."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress(tune.Callback):
    """The search's progress instead of Tune's wide status table: a line per finished trial,
    then where the search stands,

        progress: 5 of 16 done, 2 running, 9 pending, 0 failed; 1m05s elapsed, ~3m28s left

    after every finished trial and every PROGRESS_EVERY_S while trials run. Done counts the
    trials that ended by themselves or by the scheduler (completed, diverged, stopped early),
    failed those that ended in an error. The time left is an estimate: the elapsed time scaled
    by the trial-epochs still owed over those done (a finished trial's whole budget counts as
    done, so ASHA's stops shorten it), each trial's evaluation not counted apart. Under an
    auto budget (`auto`: `epochs` is the cap) a trial owes, once some have ended, the mean of
    the epochs those ended at, not the cap they mostly stop far short of. On a terminal a tqdm
    bar shows the same and the trial lines are printed above it."""

    def __init__(self, metric: str, epochs: int, total: int, stream=None,
                 clock=time.monotonic, every: float = PROGRESS_EVERY_S, auto: bool = False):
        self.metric, self.epochs, self.total, self.auto = metric, epochs, total, auto
        # the terminal is looked up when a line is printed, and the bar made at the first
        # step: Tune pickles its callbacks when the experiment starts, and a stream other
        # than sys.stdout itself (console.quiet() swaps it) does not pickle
        self._stream = stream
        self.clock, self.every = clock, every
        self.done = self.failed = 0
        self.ended: set[int] = set()  # id() of the trials counted (Tune marks them later)
        self.complete = False
        self.start = self.last_line = clock()
        self.trials: list = []
        self.bar = None
        self._bar_tried = False

    @property
    def stream(self):
        return self._stream or console.out()

    def on_step_begin(self, iteration, trials, **info):
        if not self._bar_tried:
            self._bar_tried = True
            if _terminal_width(self.stream):
                self.bar = tqdm(total=self.total, unit="trial", file=self.stream,
                                dynamic_ncols=True, desc="trials")

    def on_step_end(self, iteration, trials, **info):
        self.trials = trials
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts(), refresh=False)
            self.bar.refresh()
        elif self.clock() - self.last_line >= self.every and self._running():
            self._progress_line()

    def on_experiment_end(self, trials, **info):
        # every trial ended by itself, by an error or by the scheduler (never by an interrupt)
        self.complete = all(t.status == "ERROR" or _ended(t) for t in trials)
        if self.bar is not None:
            self.bar.close()

    def _running(self) -> list:
        return [t for t in self.trials if t.status == "RUNNING" and id(t) not in self.ended]

    def _counts(self) -> str:
        running = len(self._running())
        pending = max(0, self.total - self.done - self.failed - running)
        return (f"{self.done} of {self.total} done, {running} running, {pending} pending, "
                f"{self.failed} failed")

    def _left(self, elapsed: float) -> str:
        finished = self.done + self.failed
        # a trial --resume continued had its first epochs done before this session began
        restored = sum((t.last_result or {}).get("restored_from_epoch") or 0
                       for t in self.trials)
        running = sum((t.last_result or {}).get("epoch", 0) or 0 for t in self._running())
        ended = [(t.last_result or {}).get("epoch", 0) or 0 for t in self.trials
                 if id(t) in self.ended]
        if self.auto and ended:  # each trial to its plateau: as long as those ended took
            owed = self.total * sum(ended) / len(ended) - restored
            done = sum(ended) - restored + running
        else:
            owed = self.total * self.epochs - restored
            done = finished * self.epochs - restored + running
        if finished == self.total:
            return "none left"
        if done <= 0:
            return "time left not yet known"
        return f"~{_duration(elapsed * max(owed - done, 0) / done)} left"

    def _progress_line(self) -> None:
        self.last_line = self.clock()
        elapsed = self.last_line - self.start
        self._print(f"progress: {self._counts()}; {_duration(elapsed)} elapsed, "
                    f"{self._left(elapsed)}")

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, trial, what: str, failed: bool = False) -> None:
        self.ended.add(id(trial))
        self.done += not failed
        self.failed += failed
        r = trial.last_result or {}
        shown = " ".join(f"{k}={r[k]:.4g}" for k in (self.metric, "test/mse")
                         if isinstance(r.get(k), (int, float)))
        self._print(f"[{self.done + self.failed}] {trial.config['label']} seed "
                    f"{trial.config['seed']}: {what}"
                    f"{' at epoch ' + str(r['epoch']) if 'epoch' in r else ''} {shown}".rstrip())
        if self.bar is not None:
            self.bar.set_postfix_str(self._counts(), refresh=False)
            self.bar.update(1)
        else:
            self._progress_line()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials = trials
        status = (trial.last_result or {}).get("status", "running")
        if status in ("completed", "diverged"):
            self._line(trial, status)
        elif _stopped_by_scheduler(trial):
            self._line(trial, "stopped early")
        # else: stopped by an interrupt, unfinished: the driver says so once

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials = trials
        self._line(trial, f"error ({trial.error_file or 'see the trial folder'})", failed=True)
        if trial.path is not None:  # its process could not say so: TensorBoard's failure
            try:
                spec = TrialSpec.from_params(trial.config)
            except (KeyError, TypeError, ValueError):  # it failed on its params: no board
                return
            try:
                end_session(board_dir(trial.path, spec), "error")
            except OSError as e:  # a full disk, a lost mount: the search goes on without it
                print(f"tensorboard: the failure of {trial} not written: {e}",
                      file=console.err())


def _trial_count(space: dict, num_samples: int) -> int:
    """How many trials a param space makes: num_samples times every grid's size."""
    count = num_samples
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            count *= len(value["grid_search"])
    return count


def _ended(trial) -> bool:
    return ((trial.last_result or {}).get("status") in ("completed", "diverged")
            or _stopped_by_scheduler(trial))


def _stopped_by_scheduler(trial) -> bool:
    return trial.path is not None and os.path.exists(os.path.join(trial.path, STOPPED_FILE))


