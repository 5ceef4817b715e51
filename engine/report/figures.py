"""The report's figures: the search metric per epoch (val_curves.png), every table metric per
row with its seeds (final_bar.png), and a study's own figures (save_figure). Drawn with
matplotlib's object API (Figure, no pyplot), which draws with Agg and keeps no global state,
so reports written side by side do not share a figure."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from engine.files import write_atomic
from engine.report import display, stats


def save_figure(fig: Figure, path) -> None:
    """A study's own figure as a PNG, written atomically like the report's files."""
    write_atomic(Path(path), lambda p: fig.savefig(p, format="png", dpi=110))


def curves_figure(curves: pd.DataFrame, names: dict, order, search: dict) -> Figure:
    """The search metric per epoch: mean over every trial of a row that reported the epoch
    (so a partial run shows its progress), with a ±std band."""
    metric = search.get("metric", "val/mse")
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    data = curves[curves["metric"] == metric].assign(row=lambda d: d["trial"].map(names))
    # a trial that diverged before any finite epoch reports its metric as ±inf: not a point
    data = data.assign(value=data["value"].where(np.isfinite(data["value"])))
    for name in order:
        stats = data[data["row"] == name].groupby("epoch")["value"].agg(["mean", "std"]).dropna(
            subset=["mean"])
        if stats.empty:
            continue
        (line,) = ax.plot(stats.index, stats["mean"], label=name, lw=1.5)
        band = stats["std"].fillna(0)
        ax.fill_between(stats.index, stats["mean"] - band, stats["mean"] + band,
                        color=line.get_color(), alpha=0.2, lw=0)
    values = data["value"].dropna()
    if values.empty:
        ax.text(0.5, 0.5, f"no trial has reported {metric} yet", transform=ax.transAxes,
                ha="center", va="center")
    elif values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")  # losses fall by decades; a linear axis hides the later epochs
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=metric,
           title=f"{metric} ({search.get('mode', '')}): mean ± std over seeds")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def bar_figure(table: pd.DataFrame, search: dict, trials: pd.DataFrame | None = None,
                names: dict | None = None) -> Figure:
    """Every table metric, one panel each (small multiples, 3 to a row): per row the mean over
    completed seeds with its 95% interval, each completed seed's own value as a point, and the
    column's compact letters above, on an axis fitted to the values (not from 0: the rows'
    differences are what is read); the "real data" floor as a dashed line."""
    floor_row = table.attrs.get("floor")
    comparisons = display.comparisons(table) if len(table) else {}
    if floor_row:
        floor_values, table = table.loc[floor_row], table.drop(index=[floor_row])
    metrics = [c[:-len(" mean")] for c in table.columns if c.endswith(" mean")] or [
        (search.get("table_metrics") or [search.get("metric", "val/mse")])[0]]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    width = max(5.0, 0.6 * len(table) + 2)
    fig = Figure(figsize=(width * cols, 4.2 * rows), layout="constrained")
    x = np.arange(len(table))
    position = {name: i for i, name in enumerate(table.index)}
    done_trials = (trials[trials["status"] == "completed"] if trials is not None and len(trials)
                   else pd.DataFrame(columns=["trial"]))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        mean = table.get(f"{metric} mean", pd.Series(math.nan, index=table.index)).to_numpy(float)
        std = table.get(f"{metric} std", pd.Series(math.nan, index=table.index)).to_numpy(float)
        ci = np.array([stats.ci_halfwidth(s, int(n)) for s, n in zip(std, display.seeds(table, metric))])
        done = ~np.isnan(mean)
        ax.scatter(x[done], mean[done], marker="_", s=300, color="C0", zorder=2, label="mean")
        spread = done & ~np.isnan(ci)  # no interval where one seed gives no spread
        ax.errorbar(x[spread], mean[spread], yerr=ci[spread], fmt="none", ecolor="C0",
                    capsize=4, lw=1.5, label="95% interval")
        if metric in done_trials:
            at = [(position.get((names or {}).get(t)), v)
                  for t, v in zip(done_trials["trial"], pd.to_numeric(done_trials[metric],
                                                                      errors="coerce"))]
            at = [(i, v) for i, v in at if i is not None and np.isfinite(v)]
            if at:
                # a small fixed spread sideways, so that equal values do not hide each other
                offsets = np.linspace(-0.15, 0.15, 5)
                ax.scatter([i + offsets[j % 5] for j, (i, _) in enumerate(at)],
                           [v for _, v in at], s=12, color="C3", zorder=3, label="seeds")
        floor = floor_values.get(f"{metric} mean") if floor_row else None
        if isinstance(floor, float) and np.isfinite(floor):
            ax.axhline(floor, color="0.4", ls="--", lw=1, label=floor_row)
        column = comparisons.get(metric, (None, None, None))[2]
        letters = column.letters if column is not None else {}
        if len({ch for text in letters.values() for ch in text}) > 1:
            for row, text in letters.items():
                ax.annotate(text, (position[row], 1.0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=8)
        for i, n in zip(x, table["n"]):
            ax.annotate(f"n={n}" if done[i] else "—", (i, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(x, [str(i) for i in table.index], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(table) - 0.4)
        name, _ = display.metric_name(metric)
        ax.set_title(f"{name}: mean, 95% interval, seeds as points", fontsize=9, pad=12)
        if k == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    return fig
