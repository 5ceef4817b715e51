"""Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017).

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})

pytorch-fid computes tr((S_1 S_2)^{1/2}) with scipy's general `sqrtm` of the non-symmetric
product, which takes tens of seconds for 2,048-dimensional Inception features on a CPU. The
same trace is the sum of the square roots of the eigenvalues of the symmetric positive
semi-definite A S_2 A with A = S_1^{1/2} (S_1 S_2 and A S_2 A are similar), so one symmetric
eigenvalue problem suffices; and A belongs to the reference statistics, so it is computed
once per data set and cached with them (`Stats.sqrt_cov`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Stats:
    """Gaussian statistics of n feature vectors: mean (d,), covariance (d, d), float64."""
    mu: np.ndarray
    cov: np.ndarray
    n: int
    sqrt_cov: np.ndarray | None = None  # S^{1/2}, filled by with_sqrt() for a reference

    def with_sqrt(self) -> "Stats":
        self.sqrt_cov = psd_sqrt(self.cov)
        return self


class TooFewSamples(ValueError):
    """Fewer samples than feature dimensions: the covariance estimate is rank-deficient."""


def statistics(features: np.ndarray) -> Stats:
    """Mean and unbiased covariance (ddof 1, as pytorch-fid's np.cov) of (n, d) features.

    Refuses n <= d: the covariance would have rank < d, and the distance would then depend
    on which directions the few samples happened to span (a flagged estimate is no use in an
    ablation table, so the caller is asked for more samples instead)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    if n <= d:
        raise TooFewSamples(f"{n} samples for {d}-dimensional features give a rank-deficient "
                            f"covariance; use more than {d} samples")
    return Stats(f.mean(0), np.cov(f, rowvar=False), n)


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (negative round-off
    eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(a: Stats, b: Stats) -> float:
    """tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i(A S_b A)), A = S_a^{1/2} (a's cached root)."""
    root = a.sqrt_cov if a.sqrt_cov is not None else psd_sqrt(a.cov)
    m = root @ b.cov @ root
    m = (m + m.T) / 2  # exactly symmetric for eigvalsh
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0, None)).sum())


def frechet_distance(a: Stats, b: Stats) -> float:
    """The squared Fréchet distance between N(mu_a, S_a) and N(mu_b, S_b); pass the reference
    (with its cached square root) as `a`."""
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov)
                 - 2 * trace_sqrt_product(a, b))
