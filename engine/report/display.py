"""How the table shows a number: display names with units and the direction that is better,
values rounded to the precision their spread over seeds allows, and the best of each column
marked together with every row the seeds cannot tell from it.

Rounding: the spread (the 95% interval's half-width) keeps one significant digit, two where it begins with 1
(0.0005977 -> 0.0006, 0.00149 -> 0.0015), and the mean one digit past the spread's last
(0.01471 ± 0.0006): a reader sees every digit the seeds support and one more, no false
precision. A mean without a spread (one seed) keeps 4 significant digits.

Best within noise: per column with a direction, the best mean and, down the means, every row
until the first that the column's Holm-corrected pairwise Welch tests tell from the best
(engine/report/stats.py). A row of one seed has no spread to test with: it is marked only
where it is the best itself.
"""
from __future__ import annotations

import math

import pandas as pd

from engine.report import stats

LOWER, HIGHER = "↓", "↑"

# metric name after its split ("test/", "eval/", "val/") -> (display name, better direction);
# a direction of None: no best (a property such as a variance, not a score)
NAMES: dict[str, tuple[str, str | None]] = {
    "mse": ("MSE", LOWER), "mse_sum": ("MSE (sum over pixels)", LOWER),
    "mse_train": ("train MSE", LOWER), "mse_train_sum": ("train MSE (sum)", LOWER),
    "psnr": ("PSNR (dB)", HIGHER), "ssim": ("SSIM", HIGHER), "lpips": ("LPIPS", LOWER),
    "nll": ("NLL (nats)", LOWER), "nll_bpd": ("NLL (bits/dim)", LOWER), "ppl": ("PPL", LOWER),
    "latent_var": ("latent variance", None), "latent_var_per_dim": ("latent var. per dim", None),
    "sigma_x2": ("σx²", None), "gamma": ("γ", None), "kl": ("KL (nats)", None),
}
# FID, precision, recall and IS are per image set: "fid_sample_gmm10" -> "FID (GMM-10) ↓"
SCORES = {"fid": ("FID", LOWER), "kid": ("KID", LOWER), "fidz": ("std. FID", LOWER),
          "kidz": ("std. KID", LOWER), "precision": ("precision", HIGHER),
          "recall": ("recall", HIGHER), "is": ("IS", HIGHER)}
IMAGE_SETS = {"rec": "rec.", "sample_prior": "prior", "sample_second_stage": "2nd stage",
              "interp_mid": "interp. mid", "interp_rand": "interp. rand"}


def metric_name(metric: str) -> tuple[str, str | None]:
    """("FID (rec.) ↓", "↓") for "eval/fid_rec"; ("val. MSE ↓", "↓") for "val/mse"; an
    unknown metric as it is, with no direction."""
    split, _, name = metric.rpartition("/")
    prefix = "val. " if split == "val" else ""
    base, _, part = name.rpartition("_")
    if name in NAMES:
        shown, better = NAMES[name]
    elif base in NAMES and part.isupper():  # a cell of the noise patterns: "sigma_x2_SU"
        shown, better = NAMES[base]
        shown += f" ({part})"
    else:
        score, _, images = name.partition("_")
        spread = score == "kid" and images.startswith("std_")  # KID's std over its subsets
        images = images.removeprefix("std_") if spread else images
        if score not in SCORES or not images:
            return metric, None
        shown, better = SCORES[score]
        if spread:
            shown, better = f"{shown} s.d.", None
        gmm = images.removeprefix("sample_gmm")
        shown += f" ({IMAGE_SETS.get(images) or (f'GMM-{gmm}' if gmm.isdigit() else images)})"
    return f"{prefix}{shown}" + (f" {better}" if better else ""), better


def _decimals(std: float) -> int:
    """The decimals that keep `std` at one significant digit (two where it begins with 1);
    negative: tens, hundreds."""
    exponent = math.floor(math.log10(std))
    first = round(std / 10 ** exponent)
    if first == 10:  # 0.0096 rounds to 0.01: its first digit is then a 1
        exponent, first = exponent + 1, 1
    return (2 if first == 1 else 1) - 1 - exponent


def _fixed(value: float, decimals: int) -> str:
    return f"{round(value, decimals):.{max(decimals, 0)}f}"


def significant(v: float) -> str:
    """4 significant digits, trailing zeros kept: they state the precision ("0.01300")."""
    return f"{v:#.4g}".rstrip(".").replace(".e", "e")


def cell(mean: float, std: float, n: int) -> str:
    """"0.01471 ± 0.0006"; "0.008000 (n=1)"; "—" where no trial completed."""
    if pd.isna(mean):
        return "—"
    if pd.isna(std):
        return f"{significant(mean)} (n=1)" if n <= 1 else f"{significant(mean)} ± –"
    if std == 0 or not math.isfinite(std) or not math.isfinite(mean):
        return f"{significant(mean)} ± {std:g}"
    decimals = _decimals(std)
    if max(abs(mean), std) >= 1e6:  # fixed notation would print a wall of digits: both in
        # units of the larger's power of ten, rounded to the spread the same way
        power = math.floor(math.log10(max(abs(mean), std)))
        scaled = cell(mean / 10 ** power, std / 10 ** power, n)
        m, sd = scaled.split(" ± ")
        return f"{m}e{power} ± {sd}e{power}"
    return f"{_fixed(mean, decimals + 1)} ± {_fixed(std, decimals)}"


def best_rows(mean: pd.Series, std: pd.Series, n: pd.Series, better: str | None) -> set:
    """The index labels to mark in one column: the best mean and every row the seeds cannot
    tell from it (Welch's t-tests, Holm-corrected over the column's pairs), down the means
    until the first row they tell from it (engine/report/stats.py); none without a
    direction."""
    if better is None or not mean.notna().any():
        return set()
    return stats.compare(mean, std, n, better).bold


def comparisons(table: pd.DataFrame) -> dict[str, tuple[str, str | None, stats.Column]]:
    """{metric: (display name, better, the column's comparison)} over the table's rows (not the
    floor row): what the table's marks, letters and notes and the bar figure all read."""
    rows = table.drop(index=[table.attrs["floor"]]) if table.attrs.get("floor") else table
    out = {}
    for metric in [c[:-len(" mean")] for c in table.columns if c.endswith(" mean")]:
        name, better = metric_name(metric)
        if metric == table.attrs.get("metric") and table.attrs.get("mode") in ("min", "max"):
            better = LOWER if table.attrs["mode"] == "min" else HIGHER
        nothing = pd.Series(math.nan, index=rows.index)  # a table of means alone: no tests
        out[metric] = (name, better, stats.compare(rows[f"{metric} mean"],
                                                    rows.get(f"{metric} std", nothing),
                                                    seeds(rows, metric), better))
    return out


def seeds(table: pd.DataFrame, metric: str) -> pd.Series:
    """The seeds behind each row's value of `metric`: its own count where the table has one
    (a completed seed may lack a metric that could not be computed), else the row's n."""
    if f"{metric} n" in table:
        return table[f"{metric} n"]
    return table["n"] if "n" in table else pd.Series(0, index=table.index)


def best_note() -> str:
    return (f"bold: the best mean of each column with a direction ({LOWER} lower is better, "
            f"{HIGHER} higher), and, down the column's means, every row until the first that "
            "the tests tell from the best or that has one seed (so bold is monotone in the mean "
            "and no row shown worse than the best is bold); a row of one seed is bold only "
            "where it is the best. Letters: two rows that share a letter in a column cannot be "
            "told apart by Welch's t-test of every pair of rows with Holm's correction over the "
            f"column's pairs (family-wise {stats.LEVEL:.0%}), \"a\" the best row's (the "
            "lowest's in a column without a direction); a column whose rows all share one "
            "letter shows none, and a row of one seed has none. Values are rounded to their "
            "interval: the half-width to one significant digit (two where it begins with 1), "
            "the mean to one digit more.")
