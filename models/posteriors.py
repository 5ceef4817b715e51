"""The posterior axis: how the encoder's raw output becomes q(z|x) = N(mu, L L^T).

Every posterior is represented the same way, a mean (B, D) and a lower-triangular covariance
factor L (B, D, D) with a positive diagonal (UAE Eq. 4: Sigma = L L^T), so that every sampler
and regularizer works on every posterior. A diagonal posterior has L = diag(sigma); a point
has L = 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

# log sigma^2 is clamped so exp() neither overflows nor underflows to an exact 0 (whose log
# would make the KL infinite); the bounds allow sigma from 3e-7 to 2e4.
LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0


@dataclass
class Posterior:
    mean: torch.Tensor  # (B, D)
    scale_tril: torch.Tensor  # (B, D, D) lower-triangular, diagonal > 0 (all 0 for a point)

    @property
    def covariance(self) -> torch.Tensor:  # (B, D, D)
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    @property
    def variance(self) -> torch.Tensor:  # (B, D) diagonal of Sigma: sum_k L_jk^2
        return self.scale_tril.pow(2).sum(-1)


class PosteriorHead(NamedTuple):
    num_params: Callable[[int], int]  # D -> width of the encoder's output
    from_params: Callable[[torch.Tensor, int], Posterior]  # (B, P), D -> Posterior
    # q(z|x) has a density (L has a positive diagonal); False for a point mass (L = 0), whose
    # sampling noise is none and whose importance weights p / q are undefined
    density: bool = True


def _sigma(log_var: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))


def diagonal_gaussian(h: torch.Tensor, d: int) -> Posterior:
    """N(mu, diag(sigma^2)) from (mu, log sigma^2), the standard VAE encoder (UAE Tab. 1, VAE)."""
    mean, log_var = h[:, :d], h[:, d:2 * d]  # (B, D), (B, D)
    return Posterior(mean, torch.diag_embed(_sigma(log_var)))


def full_gaussian(h: torch.Tensor, d: int) -> Posterior:
    """N(mu, L L^T) with L lower-triangular, positive diagonal exp(log sigma^2 / 2) (UAE Eq. 4, 9)."""
    b = h.shape[0]
    mean, log_var, off = h[:, :d], h[:, d:2 * d], h[:, 2 * d:]  # off: (B, D(D-1)/2)
    rows, cols = torch.tril_indices(d, d, offset=-1, device=h.device)
    scale_tril = torch.diag_embed(_sigma(log_var))
    scale_tril = scale_tril.index_put((torch.arange(b, device=h.device)[:, None], rows, cols), off)
    return Posterior(mean, scale_tril)


def full_gaussian_bounded(h: torch.Tensor, d: int) -> Posterior:
    """N(mu, L L^T) as the UAE authors' code builds it: L_ij = tanh(r_ij) sigma_i sigma_j below
    the diagonal, sigma_i + 1e-6 on it, so the off-diagonals shrink with the sigmas
    (boschresearch/unscented-autoencoder, models/fullcov_vae.py l. 171 `torch.tanh(self.fc_r
    (result))` and l. 190-196 the 1e-6; models/dist_utils.py l. 78-118
    lower_tri_cov_matrix_from_logvar_corr). `full` takes the off-diagonals raw, as UAE Eq. 4
    writes L."""
    b = h.shape[0]
    mean, log_var, r = h[:, :d], h[:, d:2 * d], h[:, 2 * d:]  # r: (B, D(D-1)/2)
    sigma = _sigma(log_var)  # (B, D)
    rows, cols = torch.tril_indices(d, d, offset=-1, device=h.device)
    off = torch.tanh(r) * sigma[:, rows] * sigma[:, cols]  # (B, D(D-1)/2): rho_ij sigma_i sigma_j
    scale_tril = torch.diag_embed(sigma + 1e-6)
    scale_tril = scale_tril.index_put((torch.arange(b, device=h.device)[:, None], rows, cols), off)
    return Posterior(mean, scale_tril)


def point_mass(h: torch.Tensor, d: int) -> Posterior:
    """A deterministic encoder, z = mu (AE, RAE, WAE, MVU-AE, VQ-VAE): L = 0."""
    mean = h[:, :d]
    return Posterior(mean, mean.new_zeros(mean.shape[0], d, d))


POSTERIORS: dict[str, PosteriorHead] = {
    "diagonal": PosteriorHead(lambda d: 2 * d, diagonal_gaussian),
    "full": PosteriorHead(lambda d: 2 * d + d * (d - 1) // 2, full_gaussian),
    "full_bounded": PosteriorHead(lambda d: 2 * d + d * (d - 1) // 2, full_gaussian_bounded),
    "point": PosteriorHead(lambda d: d, point_mass, density=False),
}
