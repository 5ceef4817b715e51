"""The convergence mark that the report puts on a completed trial and that --epochs auto
stops a trial at (engine/report/read.py, engine/run/stopper.py): one rule, imported by
both, importing neither Ray nor torch.

The mean of the search metric over the last CONVERGENCE_WINDOW of the epochs (at least one,
at most half) may not improve by more than CONVERGENCE_TOL of its value on the mean over as
many epochs before them, nor may a watched value the trial reports (the decoder variance it
learns or estimates) move by more than CONVERGENCE_TOL either way.

A study may stop early (Search.early_stopping): once the metric's last window is more than
CONVERGENCE_TOL worse than its best window before it, the metric has passed its best and
more epochs would move it away; a watched value still moving then follows the training fit
alone (noise_variance's σ̂² is the training residual, which falls further as the decoder fits
the injected noise), so it no longer counts (Prechelt, "Early Stopping — But When?", 1998:
stop once the validation error has risen from its minimum).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

CONVERGENCE_WINDOW = 0.1
CONVERGENCE_TOL = 0.01
WATCHED = ("train/sigma_x2",)
MIN_EPOCHS = 20  # --epochs auto: --min-epochs' default
PATIENCE = 3  # --epochs auto: consecutive epochs at which the criterion must hold
PAST_BEST = "past its best"  # how the end_reason of a trial stopped early begins


def window(n: int) -> int:
    """The epochs of each of the two means compared after `n` epochs: 10% of them, at least
    one, at most half (0 below two epochs), as the report takes it."""
    return min(max(1, round(CONVERGENCE_WINDOW * n)), n // 2)


def as_float(value) -> float:
    """A value as a float, NaN where it is none or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def past_best(values: Sequence[float], mode: str = "min") -> tuple[float, int] | None:
    """(how much worse, relative to the last mean, the mean of the last `window(n)` values is
    than the best mean of as many consecutive values ending before the last window begins,
    and the epoch that best window ends at), where that is more than CONVERGENCE_TOL; else
    None (also under two epochs, or with a non-finite value)."""
    v = [as_float(x) for x in values]
    n, w = len(v), window(len(v))
    if not w or not all(map(math.isfinite, v)):
        return None
    means = [sum(v[i - w:i]) / w for i in range(w, n - w + 1)]  # windows ending at epoch i
    last = sum(v[n - w:]) / w
    sign = -1 if mode == "max" else 1
    best = min(range(len(means)), key=lambda i: sign * means[i])
    worse = sign * (last - means[best]) / max(abs(last), 1e-12)
    return (worse, best + w) if worse > CONVERGENCE_TOL else None


def still_moving(history: Mapping[str, Sequence[float]], metric: str, mode: str = "min",
                 watched: Sequence[str] = WATCHED, early_stopping: bool = False
                 ) -> dict[str, float] | None:
    """{name: relative change} of what has not flattened over `history` (name -> its value
    at epochs 1..n; a value the trial does not report is NaN, None or missing), {} where
    everything checked has flattened, None where nothing could be checked (under two epochs,
    or non-finite values in both windows of every name). The change is the report's: the
    mean of the window before the last minus the last's, relative to the last (its sign
    turned for a metric maximised), for the metric; its absolute value for a watched one.
    With `early_stopping`, {} once the metric is `past_best`, whatever the watched values do."""
    if early_stopping and past_best(history.get(metric, ()), mode) is not None:
        return {}
    sign = -1 if mode == "max" else 1
    checked, moving = False, {}
    for name in dict.fromkeys((metric, *watched)):
        values = [as_float(v) for v in history.get(name, ())]
        w = window(len(values))
        last, before = values[len(values) - w:], values[len(values) - 2 * w:len(values) - w]
        if not w or not all(map(math.isfinite, last + before)):
            continue
        last, before = sum(last) / w, sum(before) / w
        change = (before - last) / max(abs(last), 1e-12)
        change = sign * change if name == metric else abs(change)
        checked = True
        if change > CONVERGENCE_TOL:
            moving[name] = change
    return moving if checked else None


