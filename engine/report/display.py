"""How the table shows a number: display names with units and the direction that is better,
values rounded to the precision their spread over seeds allows, and the best of each column
marked together with every row the seeds cannot tell from it.

Rounding: the spread (std over seeds) keeps one significant digit, two where it begins with 1
(0.0005977 -> 0.0006, 0.00149 -> 0.0015), and the mean one digit past the spread's last
(0.01471 ± 0.0006): a reader sees every digit the seeds support and one more, no false
precision. A mean without a spread (one seed) keeps 4 significant digits.

Best within noise: per column with a direction, the best mean, and every row that Welch's
t-test (scipy.stats.ttest_ind_from_stats: each row's mean, std and seed count) cannot tell
from it at the 5% level. A row of one seed has no spread to test with: it is marked only
where it is the best itself.
"""
from __future__ import annotations

import math

import pandas as pd
from scipy.stats import ttest_ind_from_stats

NOISE_LEVEL = 0.05  # Welch's p below which a row is told apart from the best
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
SCORES = {"fid": ("FID", LOWER), "kid": ("KID", LOWER), "precision": ("precision", HIGHER),
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


def _sig(v: float) -> str:
    """4 significant digits, trailing zeros kept: they state the precision ("0.01300")."""
    return f"{v:#.4g}".rstrip(".").replace(".e", "e")


def cell(mean: float, std: float, n: int) -> str:
    """"0.01471 ± 0.0006"; "0.008000 (n=1)"; "—" where no trial completed."""
    if pd.isna(mean):
        return "—"
    if pd.isna(std):
        return f"{_sig(mean)} (n=1)" if n <= 1 else f"{_sig(mean)} ± –"
    if std == 0 or not math.isfinite(std) or not math.isfinite(mean):
        return f"{_sig(mean)} ± {std:g}"
    decimals = _decimals(std)
    if max(abs(mean), std) >= 1e6:  # fixed notation would print a wall of digits: both in
        # units of the larger's power of ten, rounded to the spread the same way
        power = math.floor(math.log10(max(abs(mean), std)))
        scaled = cell(mean / 10 ** power, std / 10 ** power, n)
        m, sd = scaled.split(" ± ")
        return f"{m}e{power} ± {sd}e{power}"
    return f"{_fixed(mean, decimals + 1)} ± {_fixed(std, decimals)}"


def best_rows(mean: pd.Series, std: pd.Series, n: pd.Series, better: str | None) -> set:
    """The index labels to mark in one column: the best mean and every row Welch's test over
    the seeds cannot tell from it (p >= NOISE_LEVEL); none without a direction."""
    have = mean.notna()
    if better is None or not have.any():
        return set()
    best = (mean[have].idxmin() if better == LOWER else mean[have].idxmax())
    marked = {best}
    m0, s0, n0 = mean[best], std[best], n[best]
    for row in mean[have].index:
        if row == best or n[row] < 2 or n0 < 2 or pd.isna(std[row]) or pd.isna(s0):
            continue
        if s0 == 0 and std[row] == 0:
            same = mean[row] == m0  # no spread at all: only an equal mean is "the same"
        else:
            p = ttest_ind_from_stats(m0, s0, int(n0), mean[row], std[row], int(n[row]),
                                     equal_var=False).pvalue
            same = not p < NOISE_LEVEL  # a NaN p (no spread to test) counts as the same
        if same:
            marked.add(row)
    return marked


def best_note() -> str:
    return (f"bold: the best mean of each column with a direction ({LOWER} lower is better, "
            f"{HIGHER} higher), and every row that Welch's t-test over its seeds cannot tell "
            f"from it (p ≥ {NOISE_LEVEL:g}); a row of one seed is bold only where it is the "
            "best. Values are rounded to their spread: the std to one significant digit (two "
            "where it begins with 1), the mean to one digit more.")
