"""The report's figures: the search metric per epoch (val_curves), every table metric per row
with its seeds (final_bar), and a study's own figures (save_figure), each as a PNG and a PDF
beside it (writers). Drawn with matplotlib's object API (Figure, no pyplot), which draws with
Agg and keeps no global state, so reports written side by side do not share a figure."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from engine.files import write_atomic
from engine.report import display, stats


PDF_FONTS = {"pdf.fonttype": 42}  # TrueType in the PDF: publishers' checks refuse Type 3


def writers(stem: str, draw: Callable[[], Figure], dpi: float | str
            ) -> dict[str, Callable[[Path], object]]:
    """{stem.png: writer(path), stem.pdf: writer(path)} of one figure, drawn at the first
    write and reused: pixels for a screen, vectors (and the images at their own pixels) for a
    paper. `dpi`: the PNG's, or "figure" for the figure's own."""
    drawn = functools.cache(draw)

    def pdf(path: Path) -> None:
        with matplotlib.rc_context(PDF_FONTS):  # read when the PDF is written, then restored
            # no creation date: the same figure gives the same bytes
            drawn().savefig(path, format="pdf", metadata={"CreationDate": None})
    return {f"{stem}.png": lambda path: drawn().savefig(path, format="png", dpi=dpi),
            f"{stem}.pdf": pdf}


def save_figure(fig: Figure, path) -> None:
    """A study's own figure as a PNG at `path` and a PDF beside it, each written atomically
    like the report's files."""
    path = Path(path)
    for name, write in writers(path.stem, lambda: fig, dpi=110).items():
        write_atomic(path.with_name(name), write)


def curves_figure(curves: pd.DataFrame, names: dict, order, search: dict) -> Figure:
    """The search metric per epoch: mean over every trial of a row that reported the epoch
    (so a partial run shows its progress), with a ±std band, the rows named as the table
    names them. Two panels: every epoch, and the last third, where the rows' curves come
    together and the first panel's scale (set by the early epochs) hides their order."""
    metric = search.get("metric", "val/mse")
    data = curves[curves["metric"] == metric].assign(row=lambda d: d["trial"].map(names))
    # a trial that diverged before any finite epoch reports its metric as ±inf: not a point
    data = data.assign(value=data["value"].where(np.isfinite(data["value"])))
    rows = {}
    for name in order:
        per_epoch = data[data["row"] == name].groupby("epoch")["value"].agg(["mean", "std"])
        per_epoch = per_epoch.dropna(subset=["mean"])
        if not per_epoch.empty:
            rows[name] = per_epoch
    epochs = sorted({e for per_epoch in rows.values() for e in per_epoch.index})
    shown, _ = display.metric_name(metric)
    fig = Figure(figsize=(9, 4), layout="constrained")
    fig.suptitle(f"{shown}: mean ± std over seeds", fontsize=10)
    if len(epochs) < 3:  # no last third to tell from the whole
        _curves(fig.add_subplot(), rows, metric, shown)
    else:
        whole, last = fig.subplots(1, 2, width_ratios=(3, 2))
        _curves(whole, rows, metric, shown)
        start = math.floor(epochs[0] + (epochs[-1] - epochs[0]) * 2 / 3)
        _curves(last, {name: per_epoch[per_epoch.index >= start]
                       for name, per_epoch in rows.items()}, metric, shown)
        whole.set_title("every epoch", fontsize=9)
        last.set_title(f"the last third: epochs {start} to {epochs[-1]}", fontsize=9)
        whole.axvspan(start, epochs[-1], color="0.92", lw=0, zorder=0)  # what the right shows
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    return fig


def _curves(ax, rows: dict[str, pd.DataFrame], metric: str, shown: str) -> None:
    """Each row's mean per epoch and its ±std band on `ax`, a row's colour the same in every
    panel (its place in the table)."""
    for k, (name, per_epoch) in enumerate(rows.items()):
        colour = f"C{k % 10}"
        ax.plot(per_epoch.index, per_epoch["mean"], label=name, lw=1.5, color=colour)
        band = per_epoch["std"].fillna(0)
        ax.fill_between(per_epoch.index, per_epoch["mean"] - band, per_epoch["mean"] + band,
                        color=colour, alpha=0.2, lw=0)
    values = pd.concat([r["mean"] for r in rows.values()]) if rows else pd.Series(dtype=float)
    if values.empty:
        ax.text(0.5, 0.5, f"no trial has reported {metric} yet", transform=ax.transAxes,
                ha="center", va="center")
    elif values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")  # losses fall by decades; a linear axis hides the later epochs
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=shown)


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
        seeds = display.seeds(table, metric)
        ci = np.array([stats.ci_halfwidth(s, int(n)) for s, n in zip(std, seeds)])
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
