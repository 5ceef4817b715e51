"""The search's progress as a user sees it: a line per finished trial, then where the search
stands (done / running / pending / failed of N, elapsed, an estimate of the time left) after
each finished trial and at intervals; a tqdm bar on a terminal. Driven here with Tune's own
callback calls on stand-in trials and a fake clock; the smoke search's real lines are read
in tests/test_search.py."""
from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import termios
from types import SimpleNamespace

from engine.run.ray_backend import _Progress, _trial_count, grid

LINE = re.compile(r"progress: (\d+) of (\d+) done, (\d+) running, (\d+) pending, (\d+) failed; "
                  r"(\S+) elapsed, (.+)$")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(label, seed, status="RUNNING", epoch=None, result_status="running", path=None):
    result = {"status": result_status, "val/mse": 0.5, **({"epoch": epoch} if epoch else {})}
    return SimpleNamespace(config={"label": label, "seed": seed}, status=status,
                           last_result=result, path=path, error_file="error.txt")


def test_the_progress_lines_count_the_trials_and_estimate_the_time_left():
    out, clock = io.StringIO(), Clock()
    progress = _Progress("val/mse", epochs=10, total=4, stream=out, clock=clock, every=60)
    a, b = trial("UAE", 0, epoch=5), trial("VAE", 0, epoch=5)
    clock.now += 30
    progress.on_step_end(1, [a, b])
    assert out.getvalue() == ""  # under a minute since the start: no line yet
    clock.now += 31
    progress.on_step_end(2, [a, b])
    # 61 s for 10 of 40 trial-epochs: 30 owed at that rate
    assert out.getvalue().splitlines() == [
        "progress: 0 of 4 done, 2 running, 2 pending, 0 failed; 1m01s elapsed, ~3m03s left"]
    progress.on_step_end(3, [a, b])  # no new line until another minute has passed
    assert len(out.getvalue().splitlines()) == 1
    # Tune calls on_trial_complete while the trial's status still reads RUNNING
    a.last_result = {"status": "completed", "epoch": 10, "val/mse": 0.1}
    b.last_result["epoch"] = 8
    c = trial("RAE", 0, epoch=1)
    clock.now += 19  # 80 s
    progress.on_trial_complete(4, [a, b, c], a)
    trial_line, line = out.getvalue().splitlines()[1:]
    assert trial_line == "[1] UAE seed 0: completed at epoch 10 val/mse=0.1"
    # done 10 + 8 + 1 = 19 of 40 trial-epochs in 80 s: 21 owed, ~88 s
    assert line == "progress: 1 of 4 done, 2 running, 1 pending, 0 failed; 1m20s elapsed, " \
                   "~1m28s left"
    b.last_result = {"status": "running", "epoch": 8}
    progress.on_trial_error(5, [a, b, c], b)
    assert out.getvalue().splitlines()[-2] == "[2] VAE seed 0: error (error.txt) at epoch 8"
    counts = LINE.match(out.getvalue().splitlines()[-1]).groups()[:5]
    assert counts == ("1", "4", "1", "1", "1")  # the errored one failed, not done
    for t in (c, trial("AE", 0, epoch=10)):
        t.last_result = {"status": "diverged", "epoch": 3}
        progress.on_trial_complete(6, [a, b, c, t], t)
    last = LINE.match(out.getvalue().splitlines()[-1]).groups()
    assert last[:5] == ("3", "4", "0", "0", "1") and last[6] == "none left"
    # every progress line adds up to the total
    for match in filter(None, map(LINE.match, out.getvalue().splitlines())):
        done, total, running, pending, failed = map(int, match.groups()[:5])
        assert done + running + pending + failed == total


def test_under_an_auto_budget_the_time_left_counts_the_epochs_trials_end_at_not_the_cap():
    out, clock = io.StringIO(), Clock()
    progress = _Progress("val/mse", epochs=150, total=4, stream=out, clock=clock, every=60,
                         auto=True)
    a, b = trial("UAE", 0, epoch=20), trial("VAE", 0, epoch=20)
    clock.now += 60
    progress.on_step_end(1, [a, b])
    # none ended yet: the cap is all it knows, 40 of 600 trial-epochs in 60 s
    assert out.getvalue().splitlines()[-1].endswith("1m00s elapsed, ~14m00s left")
    a.last_result = {"status": "completed", "epoch": 50, "val/mse": 0.1}
    b.last_result["epoch"] = 40
    clock.now += 60
    progress.on_trial_complete(2, [a, b], a)
    # one ended at 50: 4 x 50 = 200 owed, 50 + 40 done in 120 s: 110 more at that rate
    assert out.getvalue().splitlines()[-1].endswith("2m00s elapsed, ~2m27s left")
    b.last_result["epoch"] = 90  # 140 of 200 done in 180 s
    clock.now += 60
    progress.on_step_end(3, [a, b])
    assert LINE.match(out.getvalue().splitlines()[-1]).groups()[6] == "~1m17s left"
    b.last_result["epoch"] = 160  # past what the estimate owes: none, not a negative time
    clock.now += 60
    progress.on_step_end(4, [a, b])
    assert LINE.match(out.getvalue().splitlines()[-1]).groups()[6] == "~0s left"


def _terminal(columns: int):
    """A pseudo-terminal: (what was written to it, its stream); `columns` 0 is one without a
    size, as `script -c`, `nohup` under a terminal and many CI logs give a process."""
    master, slave = os.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    os.set_blocking(master, False)

    def written() -> str:
        chunks = []
        while True:
            try:
                chunks.append(os.read(master, 65536))
            except (BlockingIOError, OSError):
                return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return written, os.fdopen(slave, "w")


def _three_trials(progress):
    done = []
    for label in ("UAE", "VAE", "RAE"):
        t = trial(label, 0, status="TERMINATED", epoch=2, result_status="completed")
        done.append(t)
        progress.on_step_begin(1, done)
        progress.on_step_end(1, done)
        progress.on_trial_complete(2, done, t)
    progress.on_experiment_end(done)


def test_on_a_terminal_a_bar_counts_the_trials_and_the_trial_lines_print_above_it():
    written, out = _terminal(columns=100)
    progress = _Progress("val/mse", epochs=2, total=3, stream=out, clock=Clock())
    _three_trials(progress)
    assert progress.bar is not None
    out.flush()
    text = written()
    assert "[3] RAE seed 0: completed at epoch 2" in text
    assert re.search(r"trials: 100%\|.*\| 3/3", text), text  # tqdm's bar, full
    assert "3 of 3 done, 0 running, 0 pending, 0 failed" in text  # its postfix
    assert progress.complete


def test_a_terminal_without_a_size_gets_the_progress_lines_not_a_bar():
    """Issue 31: under `script -q -c ...` (a terminal of 0 columns) tqdm printed nothing at
    all, so the search showed no progress; such a terminal gets the lines a pipe gets."""
    written, out = _terminal(columns=0)
    progress = _Progress("val/mse", epochs=2, total=3, stream=out, clock=Clock())
    _three_trials(progress)
    assert progress.bar is None
    out.flush()
    lines = written().splitlines()
    assert [LINE.match(x).groups()[0] for x in lines if LINE.match(x)] == ["1", "2", "3"]
    assert "[3] RAE seed 0: completed at epoch 2 val/mse=0.5" in lines


def test_the_total_is_every_grid_times_the_samples():
    space = {"label": grid(["A", "B", "C"]), "seed": grid([0, 1]), "epochs": 3}
    assert _trial_count(space, 1) == 6
    assert _trial_count({"label": "UAE", "config": {}}, 20) == 20  # a sampled search
