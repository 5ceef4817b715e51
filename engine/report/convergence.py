"""The notes on whether the budget decided the table: which rows' trials had not converged by
the rule --epochs auto stops at (engine/convergence.py; the trials' own marks are
engine/report/read.py's), whether the rows' order during training held to the end (Kendall's
τ at 50% and 75% of the epochs), and whether more epochs may change places (each row's mean
curve extrapolated by a fitted power law, project).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from engine.convergence import CONVERGENCE_TOL, CONVERGENCE_WINDOW, PAST_BEST
from engine.report import display
from engine.report.rows import row_groups

STABILITY_AT = (0.5, 0.75)  # fractions of each trial's epochs the row order is compared at
PROJECT_TO = 4  # the projection: each row's curve extrapolated to this many times its epochs
PROJECT_MIN_POINTS = 6  # epochs in the second half of a curve, at least, to fit


def convergence_notes(trials: pd.DataFrame, groups: list[dict]) -> list[str]:
    """The rows with completed trials whose curves had not flattened, each with how many of its
    seeds and by how much each watched value still moved (read.converged's still_moving); and
    those whose trials an early-stopping search ended past their best, with the epochs."""
    return _not_converged(trials, groups) + _past_best(trials, groups)


def _past_best(trials: pd.DataFrame, groups: list[dict]) -> list[str]:
    if "end_reason" not in trials:
        return []
    parts = []
    for g in groups:
        sub = trials.loc[g["index"]]
        early = sub[sub["end_reason"].fillna("").astype(str).str.startswith(PAST_BEST)]
        if len(early):
            epochs = ", ".join(str(int(e)) for e in sorted(early["epochs_done"]))
            parts.append(f"{g['name']}, {len(early)} of {len(sub)} (epoch {epochs})")
    if not parts:
        return []
    return [f"stopped past their best (the study stops early: the search metric's mean over the "
            f"last {CONVERGENCE_WINDOW:.0%} of the epochs more than {CONVERGENCE_TOL:.0%} worse "
            "than its best as many epochs before; what it watches besides "
            "then follows the training fit alone, and the model evaluated is the last epoch's): "
            f"{'; '.join(parts)}."]


def _not_converged(trials: pd.DataFrame, groups: list[dict]) -> list[str]:
    if "converged" not in trials or not (trials["converged"] == False).any():  # noqa: E712
        return []
    parts = []
    for g in groups:
        sub = trials.loc[g["index"]]
        done = sub[sub["status"] == "completed"]
        late = done[done["converged"] == False]  # noqa: E712
        if late.empty:
            continue
        changes: dict[str, list[float]] = {}
        for text in late["still_moving"]:
            for name, change in json.loads(text).items():
                changes.setdefault(name, []).append(change)
        what = ", ".join(f"{name} by {_percent_range(c)}" for name, c in changes.items())
        seeds = "seed" if len(done) == 1 else "seeds"
        parts.append(f"{g['name']}, {len(late)} of {len(done)} {seeds}, {what}")
    return [f"not converged (the mean over the last {CONVERGENCE_WINDOW:.0%} of the epochs, at "
            "least one, against as many before them still improved the search metric, or moved "
            f"the decoder variance train/sigma_x2, by more than {CONVERGENCE_TOL:.0%}; more "
            f"epochs may change these rows' places): {'; '.join(parts)}."]


def _percent_range(changes: list[float]) -> str:
    """"8%" or "4.8–11%" (two significant digits)."""
    low, high = (f"{100 * v:.2g}" for v in (min(changes), max(changes)))
    return f"{low}%" if low == high else f"{low}–{high}%"


def stability_notes(curves: pd.DataFrame, trials: pd.DataFrame, search: dict) -> list[str]:
    """Whether the budget decided the ranking: for the search metric and every FID logged
    during training (val/fid*), Kendall's τ between the rows' order by their mean at 50% and
    75% of each completed trial's epochs and their order at its end (1: the same order)."""
    if curves.empty or not len(trials):
        return []
    done = trials[trials["status"] == "completed"]
    names = {t: g["name"] for g in row_groups(trials, search)
             for t in trials.loc[g["index"], "trial"]}
    metric = search.get("metric")
    watched = [metric, *sorted(m for m in curves["metric"].unique()
                               if m.startswith("val/fid") and m != metric)]
    from scipy.stats import kendalltau
    parts = []
    for name in watched:
        data = curves[(curves["metric"] == name) & curves["trial"].isin(done["trial"])
                      & np.isfinite(curves["value"])]
        at: dict[float, dict[str, list[float]]] = {f: {} for f in (*STABILITY_AT, 1.0)}
        for trial, sub in data.groupby("trial"):
            sub = sub.sort_values("epoch")
            last = int(sub["epoch"].iloc[-1])
            for f in at:
                upto = sub[sub["epoch"] <= math.ceil(f * last)]
                if len(upto):
                    at[f].setdefault(names.get(trial), []).append(float(upto["value"].iloc[-1]))
        end = {row: np.mean(v) for row, v in at[1.0].items() if row is not None}
        taus = []
        for f in STABILITY_AT:
            rows = [r for r in end if r in at[f]]
            if len(rows) < 3:
                break
            tau = kendalltau([np.mean(at[f][r]) for r in rows], [end[r] for r in rows]).statistic
            taus.append(f"{tau:.2f} at {f:.0%}")
        if len(taus) == len(STABILITY_AT):
            parts.append(f"{name}: {', '.join(taus)}")
    if not parts:
        return []
    return ["row order during training against at the end (Kendall τ of the rows' mean over "
            "seeds, at a share of each trial's epochs; 1: the same order, lower: places changed "
            "after that point, by training or by the seeds' noise): " + "; ".join(parts) + "."]


def _power_law(t, a, b, c):
    return a + b * np.power(t, -c)


def project(epochs: np.ndarray, values: np.ndarray, factor: float = PROJECT_TO) -> float:
    """The value a falling curve is expected to reach at `factor` times its last epoch: a
    least-squares fit of a + b·t^(−c) (b ≥ 0, 0 < c ≤ 5) to its second half
    (scipy.optimize.curve_fit); NaN where the fit fails or there are under 6 points."""
    from scipy.optimize import curve_fit
    keep = epochs >= epochs.max() / 2
    t, y = epochs[keep].astype(float), values[keep].astype(float)
    if len(t) < PROJECT_MIN_POINTS or not np.all(np.isfinite(y)):
        return math.nan
    scale = max(float(np.ptp(y)), 1e-12 * max(1.0, abs(float(y[-1]))))
    try:
        (a, b, c), _ = curve_fit(_power_law, t, y, p0=(y[-1] - scale, scale * t[0] ** 0.5, 0.5),
                                 bounds=([-np.inf, 0, 1e-3], [np.inf, np.inf, 5]), maxfev=5000)
    except (RuntimeError, ValueError):
        return math.nan
    return float(_power_law(factor * t[-1], a, b, c))


def projection_notes(curves: pd.DataFrame, trials: pd.DataFrame, search: dict) -> list[str]:
    """Whether more epochs could change a place: each row's mean curve of the search metric
    over its completed seeds (up to the last epoch all of them reached), extrapolated to
    PROJECT_TO times its epochs; the adjacent pairs (by the last value) whose projected order
    is the other way round."""
    metric, sign = search.get("metric"), (-1 if search.get("mode") == "max" else 1)
    if curves.empty or not len(trials) or metric is None:
        return []
    done = trials[trials["status"] == "completed"]
    names = {t: g["name"] for g in row_groups(trials, search)
             for t in trials.loc[g["index"], "trial"]}
    data = curves[(curves["metric"] == metric) & curves["trial"].isin(done["trial"])]
    now, later = {}, {}
    for row, sub in data.assign(row=data["trial"].map(names)).groupby("row", sort=False):
        # the epochs every seed reached (an auto budget ends seeds at different epochs): past
        # them the mean would be fewer seeds' and jump
        common = sub.groupby("trial")["epoch"].max().min()
        mean = sub[sub["epoch"] <= common].groupby("epoch")["value"].mean()
        if len(mean) < 2 or not np.isfinite(mean.iloc[-1]):
            continue
        now[row] = sign * float(mean.iloc[-1])
        later[row] = sign * project(mean.index.to_numpy(), sign * mean.to_numpy())
    order = sorted(now, key=now.get)
    if data["epoch"].max() < 2 * PROJECT_MIN_POINTS:  # a smoke run: nothing to fit
        return []
    if len(order) < 2 or any(math.isnan(later[r]) for r in order):
        failed = [r for r in order if math.isnan(later.get(r, math.nan))]
        return [f"{metric}: no projection of {', '.join(failed)} (too few epochs or no fit), "
                "so whether more epochs change places is not known."] if failed else []
    flips = [(a, b) for a, b in zip(order, order[1:]) if sign * later[b] < sign * later[a]]
    head = (f"{metric} projected to {PROJECT_TO}× each row's epochs (a + b·t^−c fitted to the "
            "second half of the row's mean curve)")
    if not flips:
        return [f"{head}: the fitted curves predict no change of place between adjacent "
                "rows (one fit per row's mean curve; the seeds' noise aside)."]
    return [f"{head}: more epochs may change places, " + "; ".join(
        f"{b} would pass {a} ({display.significant(later[b])} against "
        f"{display.significant(later[a])})"
        for a, b in flips) + "."]
