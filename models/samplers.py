"""The sampling axis: how latents are drawn from q(z|x) for the decoder.

Every sampler returns z of shape (S, B, D) with weights (S,) that sum to 1, whether S is k
random draws, 2D+1 sigma points or 1 mean, so the reconstruction term is always the weighted
sum over S of a per-sample loss, an estimate of E_q[loss]. `combine=True` asks the model to
combine the S decoded outputs into their weighted mean before the loss (UAE Eq. 6).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from .config import Config
from .posteriors import Posterior


class Samples(NamedTuple):
    z: torch.Tensor  # (S, B, D)
    weights: torch.Tensor  # (S,)
    combine: bool = False


def sigma_points(mean: torch.Tensor, scale_tril: torch.Tensor, kappa: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2D+1 symmetric sigma points of N(mu, L L^T) and their weights (UAE Eq. 5).

    chi_0 = mu, chi_i = mu + sqrt(kappa + D) L[:, i], chi_{i+D} = mu - sqrt(kappa + D) L[:, i];
    w_0 = kappa / (D + kappa), w_i = 1 / (2 (D + kappa)), so that sum_i w_i chi_i = mu and
    sum_i w_i (chi_i - mu)(chi_i - mu)^T = L L^T exactly.
    """
    d = mean.shape[-1]
    spread = math.sqrt(kappa + d) * scale_tril.transpose(-1, -2)  # (B, D, D): row i = column i of L
    offsets = spread.transpose(0, 1)  # (D, B, D)
    points = torch.cat([mean[None], mean[None] + offsets, mean[None] - offsets])  # (2D+1, B, D)
    weights = mean.new_full((2 * d + 1,), 1.0 / (2 * (d + kappa)))
    weights[0] = kappa / (d + kappa)
    return points, weights


def reparameterized(post: Posterior, cfg: Config) -> Samples:
    """k = num_samples draws z = mu + L eps, eps ~ N(0, I) (UAE Eq. 4), equally weighted."""
    s = cfg.num_samples
    eps = torch.randn(s, *post.mean.shape, device=post.mean.device, dtype=post.mean.dtype)
    z = post.mean + torch.einsum("bij,sbj->sbi", post.scale_tril, eps)  # (S, B, D)
    return Samples(z, post.mean.new_full((s,), 1.0 / s))


def unscented_random(post: Posterior, cfg: Config) -> Samples:
    """num_samples sigma points per input, drawn uniformly without replacement (UAE Eq. 8).

    Each input draws its own points; they are equally weighted, as in UAE Table 2 (one point)
    and its appendix D (several points).
    """
    points, _ = sigma_points(post.mean, post.scale_tril, cfg.kappa)  # (2D+1, B, D)
    n, b, d = points.shape
    s = cfg.num_samples
    pick = torch.rand(b, n, device=points.device).argsort(dim=1)[:, :s]  # (B, S)
    z = points.gather(0, pick.T[:, :, None].expand(s, b, d))  # (S, B, D)
    return Samples(z, post.mean.new_full((s,), 1.0 / s))


def unscented_rows(post: Posterior, cfg: Config) -> Samples:
    """As "unscented", but with the sigma points along the rows of L, mu +- sqrt(kappa + D)
    L[i, :], as the UAE authors' code takes them (boschresearch/unscented-autoencoder,
    models/dist_utils.py l. 121-140, get_sigma_pts: `rep_mu + sqrt_scaled_cov`, mu repeated
    along rows). Their spread is L^T L, not Sigma = L L^T: a bug of that code, offered only to
    replicate it exactly; the two agree for a diagonal L."""
    return unscented_random(Posterior(post.mean, post.scale_tril.transpose(-1, -2)), cfg)


def unscented_all(post: Posterior, cfg: Config) -> Samples:
    """All 2D+1 sigma points, each reconstructed, weighted by the UT weights (UAE appendix D)."""
    return Samples(*sigma_points(post.mean, post.scale_tril, cfg.kappa))


def unscented_mean(post: Posterior, cfg: Config) -> Samples:
    """num_samples random sigma points, decoded and combined into their plain mean before the
    loss, as the UAE authors' code does (its reading of UAE Eq. 6, which prints no weights)."""
    return unscented_random(post, cfg)._replace(combine=True)


def posterior_mean(post: Posterior, cfg: Config) -> Samples:
    """z = mu: the deterministic encoders (AE, RAE, WAE) and deterministic decoding."""
    return Samples(post.mean[None], post.mean.new_ones(1))


SAMPLERS: dict[str, Callable[[Posterior, Config], Samples]] = {
    "reparam": reparameterized,
    "unscented": unscented_random,
    "unscented_rows": unscented_rows,
    "unscented_all": unscented_all,
    "unscented_mean": unscented_mean,
    "mean": posterior_mean,
}

# UAE Sec. 4.2 / Fig. 1c's comparison: random draws against sigma points, the schemes whose
# encoder-gradient variance the evaluation's "diagnostics" group measures by default
UAE_GRADIENT_SAMPLINGS = ("reparam", "unscented")
