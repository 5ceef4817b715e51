"""Sample quality in a named feature space: FID of reconstructions, of samples drawn through
each ex-post density and of interpolations; precision and recall; Inception Score.

- FID (Heusel et al. 2017) as UAE Table 2, Takida Tables 4-6 and Dai & Wipf Table 1 use it:
  reconstructions of the reference split, samples from N(0, I) / GMM-10 / GMM-100 / the
  second-stage VAE fitted on the training latents, and decodings of spherical interpolations
  between random pairs of the reference split at the midpoint and at a U(0, 1) ratio
  (Takida Sec. 6.2 / Table 5).
- Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 3): a sample is "in" a set's
  manifold if it lies within the k-th-nearest-neighbour radius of one of the set's points.
- Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), only where the
  feature space has Inception's logits.
- KID (Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 4): the unbiased estimate of the
  squared MMD between the two feature sets under the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets as torch-fidelity and torchmetrics
  do. Unlike FID it is unbiased at any sample size, which matters where the reference split
  is small (the embedded data sets' few hundred to thousand test images). The evaluation
  computes it on standardized features (engine/eval/metrics/features.py), where it reads in
  its usual 1e-3..1 range; its std is NaN where the subsets cannot differ.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from engine.eval.metrics.latent import slerp
from models import float_images

# --- image sets, produced in batches so 10,000 CelebA-size images never sit in memory ---


def reconstructions(model, images: torch.Tensor, device, batch_size: int) -> Iterator:
    """D(mu(x)) of every image (through the codebook where there is one)."""
    for i in range(0, len(images), batch_size):
        yield model.reconstruct(float_images(images[i:i + batch_size], device))


def decoded(model, latents: torch.Tensor, device, batch_size: int) -> Iterator:
    """The decoder mean of each latent (n, D), through the nearest code for a VQ model (whose
    decoder only ever sees codes)."""
    for i in range(0, len(latents), batch_size):
        yield model.generate(latents[i:i + batch_size].to(device))


def interpolation_latents(model, images: torch.Tensor, n: int, ratio: str, seed: int,
                          device, batch_size: int) -> torch.Tensor:
    """n slerps between the posterior means of random pairs of `images`, at t = 0.5
    ("mid") or t ~ U(0, 1) per pair ("rand"). (n, D)"""
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(len(images), (n,), generator=gen)
    j = torch.randint(len(images), (n,), generator=gen)
    t = torch.full((n,), 0.5) if ratio == "mid" else torch.rand(n, generator=gen)
    out = []
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        mu_i = model.encode(float_images(images[i[sl]], device))[0]
        mu_j = model.encode(float_images(images[j[sl]], device))[0]
        out.append(slerp(mu_i, mu_j, t[sl].to(device)).cpu())
    return torch.cat(out)


# --- precision / recall ---

def _kth_radius(x: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row. (n,)"""
    radii = []
    for s in range(0, len(x), batch):
        d = torch.cdist(x[s:s + batch], x)  # (b, n), includes the 0 distance to itself
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
              batch: int) -> float:
    """Fraction of points inside at least one ball (centre, radius)."""
    inside = []
    for s in range(0, len(points), batch):
        d = torch.cdist(points[s:s + batch], centres)  # (b, m)
        inside.append((d <= radii[None]).any(1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch: int = 1000,
                     device="cpu", seed: int = 0) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019, Eq. 1-3: precision = share of fake samples inside the real
    manifold (union of k-NN balls of the real features), recall = share of real samples
    inside the fake manifold. Both sets are cut to the same size by a seeded random subset
    (the paper compares equal numbers), and the distances are computed on `device`."""
    n = min(len(real), len(fake))
    rng = np.random.default_rng(seed)

    def subset(a: np.ndarray) -> torch.Tensor:  # (n, d) on device
        rows = np.sort(rng.choice(len(a), n, replace=False)) if len(a) > n else slice(None)
        return torch.from_numpy(np.asarray(a[rows], dtype=np.float32)).to(device)
    r, f = subset(real), subset(fake)
    precision = _coverage(f, r, _kth_radius(r, k, batch), batch)
    recall = _coverage(r, f, _kth_radius(f, k, batch), batch)
    return precision, recall


# --- KID ---

def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, device=None) -> tuple[float, float]:
    """(mean, std) over `subsets` draws of the unbiased MMD² (torchmetrics' poly_mmd: degree
    3, gamma 1/d, coef 1) between `subset_size` real and as many fake features, each subset
    drawn without replacement, both cut to the smaller set's size where they are smaller (a
    subset then holds every feature of that set, in another order). The std is the
    population one (ddof 0), as torchmetrics' and torch-fidelity's; NaN where the subsets
    cannot differ (`subsets_differ`: the subset size covers both sets, so every draw is the
    one full-set estimate, computed once; a std there would be round-off). Computed in
    float64 on `device` (a GPU's: 100 subsets of 1,000 2,048-d Inception features are ~1
    TFLOP).

    Where one set is no larger than the subset size (MNIST-5k's 750 test images against
    10,000 samples), every subset holds all of it, and its terms are sums over the whole set:
    Σ_{a≠b} k(x_a, x_b) is one number, and Σ_{a, b∈J} k(x_a, y_b) the sum over J of the
    kernel's column sums, each computed once, so a subset costs one n × n kernel instead of
    three (the same estimate; only the order of the float64 sums differs)."""
    from torchmetrics.image.kid import poly_kernel, poly_mmd
    n = min(subset_size, len(real), len(fake))
    if n < 2:
        raise ValueError(f"KID needs 2 or more features in each set, has {n}")
    r = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float64)).to(device)
    f = torch.from_numpy(np.ascontiguousarray(fake, dtype=np.float64)).to(device)
    if not subsets_differ(len(real), len(fake), subset_size):
        return float(poly_mmd(r, f)), math.nan
    whole_r, whole_f = n == len(r), n == len(f)  # not both: the subsets differ
    # (1,) sums that are the same for every subset, and (len(other),) column sums
    rr = _off_diagonal_sum(poly_kernel(r, r)) if whole_r else None
    ff = _off_diagonal_sum(poly_kernel(f, f)) if whole_f else None
    between = _kernel_column_sums(r, f) if whole_r else \
        _kernel_column_sums(f, r) if whole_f else None
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same subsets on any device
    values = []
    for _ in range(subsets):
        i = torch.randperm(len(r), generator=gen)[:n].to(r.device)
        j = torch.randperm(len(f), generator=gen)[:n].to(f.device)
        xx = rr if whole_r else _off_diagonal_sum(poly_kernel(r[i], r[i]))
        yy = ff if whole_f else _off_diagonal_sum(poly_kernel(f[j], f[j]))
        xy = (between[j].sum() if whole_r else between[i].sum() if whole_f
              else poly_kernel(r[i], f[j]).sum())
        values.append((xx + yy) / (n * (n - 1)) - 2 * xy / n ** 2)  # torchmetrics' MMD²
    values = torch.stack(values)
    return float(values.mean()), float(values.std(unbiased=False))


def _off_diagonal_sum(k: torch.Tensor) -> torch.Tensor:
    """Σ_{a≠b} k[a, b] of a square kernel matrix."""
    return k.sum() - k.diagonal().sum()


def _kernel_column_sums(a: torch.Tensor, b: torch.Tensor, block: int = 2000) -> torch.Tensor:
    """(len(b),) Σ_a k(a_a, b_c) for every c, under KID's cubic kernel, `block` columns at a
    time (a (len(a), block) kernel in memory, not (len(a), len(b)))."""
    from torchmetrics.image.kid import poly_kernel
    return torch.cat([poly_kernel(a, b[s:s + block]).sum(0) for s in range(0, len(b), block)])


def subsets_differ(n_real: int, n_fake: int, subset_size: int) -> bool:
    """Whether KID's random subsets can differ: not where the subset size is at least both
    sets' sizes (every subset is then both whole sets)."""
    return min(subset_size, n_real, n_fake) < max(n_real, n_fake)


NO_SUBSET_SPREAD = "n/a: subsets cannot differ (the KID subset size covers both sets)"


# --- Inception Score ---

def inception_score(logits: np.ndarray, splits: int = 10) -> float:
    """exp(E_x KL(p(y|x) || p(y))) averaged over `splits` equal parts (Salimans et al. 2016,
    as in their and torch-fidelity's code); the mean over splits."""
    logits = np.asarray(logits, dtype=np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))  # log p(y|x), (n, C)
    scores = []
    for part in np.array_split(logp, splits):
        p_y = np.log(np.exp(part).mean(0))  # log p(y) over the part, (C,)
        kl = (np.exp(part) * (part - p_y)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores))
