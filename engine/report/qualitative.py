"""The run's qualitative figure (qualitative.png), as the papers' figures show their models
(UAE Fig. 2): a band per table row with its test inputs over their reconstructions, samples
through every density the evaluation sampled, and two interpolation strips, all from the
images each trial saved at its end (engine/eval/qualitative.py's qualitative.npz; no torch
here). A row shows its lowest-seed completed trial (pictures); a row with none is left out,
and the figure's title says so (title). Small images are drawn enlarged, their pixels kept
(nearest); the PNG has enough pixels for a page's width (PAPER_PIXELS), the PDF each image at
its own pixels."""
from __future__ import annotations

import math
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from engine.report.rows import row_groups

FILE = "qualitative.npz"  # engine/eval/qualitative.py writes it; the report only reads it
GAP = 1  # px between images, in the images' own pixels
BAND = 2  # image rows per band
# the PNG's width at the least: 7 in at 300 dpi, a two-column page's text width (a figure*),
# so that the figure stays sharp where a paper sets it across the page
PAPER_PIXELS = 2100


def load_strips(trial_dir: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(Path(trial_dir) / FILE) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing, or cut short
        return None


def pictures(run: Path, trials: pd.DataFrame, search: dict) -> list[tuple]:
    """(row name, strips) per table row, in the table's order, of the row's lowest-seed
    completed trial that saved its pictures."""
    if not len(trials):
        return []
    out = []
    for g in row_groups(trials, search):
        done = trials.loc[g["index"]]
        done = done[done["status"] == "completed"].sort_values("seed", kind="stable")
        for _, t in done.iterrows():
            strips = load_strips(run / t["trial"])
            if strips:
                out.append((f"{g['name']}\nseed {t['seed']}", strips))
                break
    return out


def title(search: dict, pictures: list, trials: pd.DataFrame) -> str:
    """The figure's title: the search, its data set, and how many rows are left out."""
    shown = len(pictures)
    rows = len({g["name"] for g in row_groups(trials, search)})
    missing = (f"; {rows - shown} row(s) with no completed trial that saved its pictures are "
               "left out") if rows > shown else ""
    return (f"{search.get('name')} on {search.get('dataset')}: each row's lowest-seed completed "
            f"trial at its last epoch{missing}")


def _grid(images: np.ndarray, rows: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*(H+GAP)-GAP, cols*(W+GAP)-GAP, C) grid on white,
    filled row by row."""
    n, h, w, c = images.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + GAP):r * (h + GAP) + h, k * (w + GAP):k * (w + GAP) + w] = im
    return out


def _blocks(strips: dict[str, np.ndarray], columns: list[str]) -> list[np.ndarray | None]:
    """A band's blocks: inputs over reconstructions, each density's samples, the two
    interpolations; None where the row has no such images."""
    out = []
    for column in columns:
        if column == "inputs / reconstructions":
            have = "inputs" in strips and "reconstructions" in strips
            out.append(_grid(np.concatenate([strips["inputs"], strips["reconstructions"]]),
                             BAND) if have else None)
        else:
            out.append(_grid(strips[column], BAND) if column in strips else None)
    return out


def figure(rows: list[tuple[str, dict[str, np.ndarray]]], title: str) -> Figure:
    """One band per (row name, strips), the blocks as columns labelled above the first band;
    a density a row lacks is a dash."""
    samples = sorted({k for _, s in rows for k in s if k.startswith("samples/")},
                     key=lambda k: (k != "samples/prior", k))
    columns = ["inputs / reconstructions", *samples, "interpolation"]
    bands = [(name, _blocks(strips, columns)) for name, strips in rows]
    widths = [max(b[k].shape[1] for _, b in bands if b[k] is not None) for k in range(len(columns))]
    height = max(b.shape[0] for _, blocks in bands for b in blocks if b is not None)
    scale = max(1.0, 56 / height) / 100  # inches per image pixel: a band >= 0.56 in high
    size = (sum(widths) * scale + 0.25 * len(columns) + 1.2,
            len(bands) * (height * scale + 0.12) + 0.6)
    # its dpi: the PNG's (savefig's dpi="figure"), PAPER_PIXELS wide at the least
    fig = Figure(figsize=size, dpi=max(300, math.ceil(PAPER_PIXELS / size[0])),
                 layout="constrained")
    grid = fig.add_gridspec(len(bands), len(columns), width_ratios=widths)
    for r, (name, blocks) in enumerate(bands):
        for k, (column, block) in enumerate(zip(columns, blocks)):
            ax = fig.add_subplot(grid[r, k])
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if block is None:
                ax.text(0.5, 0.5, "—", ha="center", va="center", transform=ax.transAxes)
            else:
                gray = block.shape[-1] == 1
                ax.imshow(block[..., 0] if gray else block, cmap="gray" if gray else None,
                          vmin=0, vmax=255, interpolation="none")  # nearest; unsampled in a PDF
            if r == 0:
                ax.set_title(_column_name(column), fontsize=8)
            if k == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    # a long title (the rows left out) wrapped to the figure's width, ~13 characters an inch
    fig.suptitle(textwrap.fill(title, max(40, int(fig.get_figwidth() * 13))), fontsize=9)
    return fig


def _column_name(column: str) -> str:
    names = {"interpolation": "interpolations (slerp)", "samples/prior": "samples: N(0, I)",
             "samples/second_stage": "samples: 2nd stage"}
    if column in names:
        return names[column]
    density = column.removeprefix("samples/")
    if density.startswith("gmm") and density[3:].isdigit():
        return f"samples: GMM-{density[3:]}"
    return column.replace("samples/", "samples: ")
