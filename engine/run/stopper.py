"""--epochs auto: train each trial until its search metric has plateaued, capped at --max-epochs.

The rule is the report's convergence criterion (engine/report/read.py `converged`),
applied after every epoch k to the epochs 1..k: the mean of the search metric over the last
10% of the epochs (at least one, at most half) may not improve by more than 1% of its value
on the mean over as many epochs before them, nor may a watched value the trial reports (the
decoder variance train/sigma_x2) move by more than 1%; and the trial must have trained at
least `min_epochs` epochs (20 by default), so that it is not stopped while its learning rate
still anneals or before its first epochs' noise has settled. The criterion must hold at
`patience` consecutive epochs (3), the last of them the trial's last: at 20-24 epochs each
mean is over 2 epochs, and one noisy epoch makes a "plateau" of a curve still falling
(measured, RAE-GP-code on MNIST-5k at the UAE code's Adam 5e-3 with ReduceLROnPlateau: it
holds first at epoch 21, val/mse 0.0188, 3 epochs in a row first at 32, 0.0172; the curve's
best is 0.0160 at epoch 50; at the library's constant 1e-3 the curve is smooth and it holds
from epoch 58 on). A trial that meets the rule has converged by the report's own mark (it
holds at the last epoch), so a run with --epochs auto reports no row "not converged" except
those that reached the cap.

With `early_stopping` (a study's `Search.early_stopping`), the rule also holds once the metric
has passed its best (engine/convergence.py `past_best`: its last window more than 1% worse than
its best window before), whatever the watched values do: the trial ends "past its best" at the
third such epoch in a row, and the report counts it converged. The model evaluated is the last
epoch's, not the best's (as Keras' EarlyStopping without restore_best_weights): a little past
the best window's metric, and a resume needs no second set of weights.

`PlateauStopper` holds the rule with Ray Tune's `Stopper` interface (`__call__(trial_id,
result) -> bool`, `stop_all()`; engine/run/ray_backend registers it as a
`ray.tune.stopper.Stopper`, so that Tune takes it as one). The trial asks it itself, after each
epoch's validation, inside the trainable (engine/run/trial.py) rather than Tune asking it in
the driver: a trial that Tune stops has already reported its last epoch as "running", so it
could not be evaluated at its end and would count as stopped early, while the trainable that
learns this epoch is its last evaluates it and reports it "completed", like any trial at the
end of its budget. And the trainable can restore the rule's state exactly: it is the metric's
history, which every checkpoint holds (`history`), where a Tune stopper in the driver sees
only the results of its own session (a trial --resume continues is a new Tune trial).

Nothing here imports Ray: the engine's command line, the trial loop and `python -m
engine.train` use the rule without it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

# the rule itself is the report's convergence mark, one piece of code for both
from engine.convergence import (CONVERGENCE_TOL, CONVERGENCE_WINDOW, MIN_EPOCHS,  # noqa: F401
                                PAST_BEST, PATIENCE, WATCHED, as_float, past_best,
                                still_moving, window)


class PlateauStopper:
    """The plateau rule as a Ray Tune stopper: called with each result of a trial (its
    "epoch" and metrics; a repeated epoch, e.g. a restored trial's, replaces the earlier one),
    it answers True at the first epoch >= min_epochs where nothing has moved any more
    (`still_moving` is {}) at this and the `patience` - 1 epochs before, or at `max_epochs`
    (when given). `reason(trial_id)` says which. Its answer is a function of the trial's
    history alone.
    `restore(trial_id, history)` gives it a trial's history from a checkpoint, so that a
    resumed trial decides at the same epoch as one never interrupted."""

    def __init__(self, metric: str, mode: str = "min", min_epochs: int = MIN_EPOCHS,
                 max_epochs: int | None = None, watched: Sequence[str] = WATCHED,
                 patience: int = PATIENCE, early_stopping: bool = False):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r}: min or max")
        if min(min_epochs, patience, max_epochs or 1) < 1:
            raise ValueError(f"min_epochs {min_epochs}, max_epochs {max_epochs}, patience "
                             f"{patience}: each >= 1")
        self.metric, self.mode, self.min_epochs, self.max_epochs = (metric, mode, min_epochs,
                                                                    max_epochs)
        self.patience, self.early_stopping = patience, early_stopping
        self.watched = tuple(watched)
        self._history: dict[str, dict[str, list[float]]] = {}  # trial -> name -> values
        self._reason: dict[str, str] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """What the rule reads from each result."""
        return tuple(dict.fromkeys((self.metric, *self.watched)))

    def history(self, trial_id: str) -> dict[str, list[float]]:
        """The trial's values of `names` at epochs 1..n (NaN where it reported none): what a
        checkpoint saves."""
        return {k: list(v) for k, v in self._history.get(trial_id, {}).items()}

    def restore(self, trial_id: str, history: Mapping[str, Sequence[float]]) -> None:
        lengths = {len(history.get(name, ())) for name in self.names}
        if len(lengths) != 1:
            raise ValueError(f"a plateau history of unequal lengths: {sorted(lengths)}")
        self._history[trial_id] = {name: [as_float(v) for v in history.get(name, ())]
                                   for name in self.names}
        self._reason.pop(trial_id, None)

    def __call__(self, trial_id: str, result: dict) -> bool:
        epoch = int(result.get("epoch") or result.get("training_iteration") or 0)
        history = self._history.setdefault(trial_id, {name: [] for name in self.names})
        n = len(history[self.metric])
        if not 1 <= epoch <= n + 1:
            raise ValueError(f"epoch {epoch} after a history of {n} epochs")
        for name in self.names:
            del history[name][epoch - 1:]  # a repeated epoch: its later result wins
            history[name].append(as_float(result.get(name)))
        reason = self.decide(history)
        if reason is None:
            self._reason.pop(trial_id, None)
            return False
        self._reason[trial_id] = reason
        return True

    def decide(self, history: Mapping[str, Sequence[float]]) -> str | None:
        """Why the trial ends after the epochs of `history`: "plateau at epoch k (...)", "past
        its best at epoch k (...)" (early stopping) or "max epochs N reached, no plateau
        (...)"; None where it goes on."""
        n = len(history.get(self.metric, ()))
        if n >= self.min_epochs:
            # which rule held after each of the last `patience` epochs, the newest first (most
            # epochs end the check there): "plateau" (nothing watched moves), "past" (early
            # stopping: the metric has passed its best) or None
            held: list[str | None] = []
            for m in range(n, n - self.patience, -1):
                held.append(self._held({k: v[:m] for k, v in history.items()}))
                if held[-1] is None:
                    break
            if all(held):
                w = window(n)
                before = ("" if self.patience == 1 else
                          f", as at the {self.patience - 1} epochs before"
                          if len(set(held)) == 1 else
                          f", a plateau or past its best at the {self.patience - 1} epochs "
                          "before")
                if held[0] == "past":  # ended by the early stop, not by a plateau
                    worse, best = past_best(history[self.metric], self.mode)
                    return (f"{PAST_BEST} at epoch {n} ({self.metric}: the mean of epochs "
                            f"{_span(n - w + 1, n)} {100 * worse:.3g}% worse than that of "
                            f"epochs {_span(best - w + 1, best)}{before})")
                return (f"plateau at epoch {n} ({self.metric}: the mean of epochs "
                        f"{_span(n - w + 1, n)} within {CONVERGENCE_TOL:.0%} of that of "
                        f"epochs {_span(n - 2 * w + 1, n - w)}{before})")
        if self.max_epochs is not None and n >= self.max_epochs:
            moving = still_moving(history, self.metric, self.mode, self.watched,
                                  self.early_stopping)
            still = ", ".join(f"{k} by {100 * v:.2g}%" for k, v in (moving or {}).items())
            return (f"max epochs {self.max_epochs} reached, no plateau"
                    + (f" ({still} over the last {window(n)} epochs)" if still else ""))
        return None

    def _held(self, history: Mapping[str, Sequence[float]]) -> str | None:
        if still_moving(history, self.metric, self.mode, self.watched) == {}:
            return "plateau"
        if self.early_stopping and past_best(history.get(self.metric, ()), self.mode):
            return "past"
        return None

    def reason(self, trial_id: str) -> str | None:
        return self._reason.get(trial_id)

    def stop_all(self) -> bool:
        return False


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}-{b}"


def history_from_lines(lines: Sequence[dict], names: Sequence[str], upto: int
                       ) -> dict[str, list[float]] | None:
    """A trial's plateau history at epochs 1..`upto` from its result lines (each epoch's
    last line wins), None where an epoch is missing: for a checkpoint written before the
    checkpoint held it."""
    by_epoch = {}
    for line in lines:
        if isinstance(line.get("epoch"), int):
            by_epoch[line["epoch"]] = line
    if any(e not in by_epoch for e in range(1, upto + 1)):
        return None
    return {name: [as_float(by_epoch[e].get(name)) for e in range(1, upto + 1)]
            for name in names}
