"""The latent-regularizer axis (weight beta): how q(z|x) is pulled toward the prior N(0, I).

Each function takes the posterior and the drawn latents and returns a per-input value (B,),
except the MMD, which compares the whole batch with the prior and returns a scalar.
"""
from __future__ import annotations

from typing import Callable

import torch

from .posteriors import Posterior
from .samplers import Samples

# WAE-MMD's 7 scales of the inverse multiquadric kernel (Tolstikhin et al. 2018; Takida Sec. 6).
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _diag(scale_tril: torch.Tensor) -> torch.Tensor:  # (B, D)
    return torch.diagonal(scale_tril, dim1=-2, dim2=-1)


def kl_to_standard_normal(post: Posterior, samples: Samples) -> torch.Tensor:
    """KL(N(mu, L L^T) || N(0, I)) = 1/2 (||mu||^2 + tr(Sigma) - D - 2 sum_i log L_ii).

    UAE Eq. 9 writes twice this (no 1/2), so UAE Table 1's VAE row is beta = 2 here.
    """
    d = post.mean.shape[-1]
    trace = post.scale_tril.pow(2).sum((-2, -1))  # tr(L L^T) = ||L||_F^2
    log_det = 2 * torch.log(_diag(post.scale_tril)).sum(-1)
    return 0.5 * (post.mean.pow(2).sum(-1) + trace - d - log_det)


def wasserstein2_to_standard_normal(post: Posterior, samples: Samples) -> torch.Tensor:
    """||mu||^2 + ||L - I||_F^2 = ||mu||^2 + tr(Sigma) + D - 2 tr(L) (UAE Eq. 10, 18-19).

    The squared 2-Wasserstein distance to N(0, I) for a diagonal posterior; for a full one the
    paper's tr(L) stands in for tr(Sigma^(1/2)) >= tr(L), so the value is an upper bound.
    """
    eye = torch.eye(post.mean.shape[-1], device=post.mean.device, dtype=post.mean.dtype)
    return post.mean.pow(2).sum(-1) + (post.scale_tril - eye).pow(2).sum((-2, -1))


def wasserstein2_unsquared(post: Posterior, samples: Samples) -> torch.Tensor:
    """||L + 1e-6 - I||_F + ||mu||_2, unsquared, 1e-6 added to every entry of L: the UAE
    authors' code for the W2 term (boschresearch/unscented-autoencoder, models/fullcov_vae.py
    l. 271-283 and models/vanilla_vae.py l. 231-250, `frob_norm: True`). The gradient of
    ||A||_F is A / ||A||_F against the squared Eq. 10's 2 A: at one beta it pulls harder the
    closer the posterior already is to N(0, I)."""
    eye = torch.eye(post.mean.shape[-1], device=post.mean.device, dtype=post.mean.dtype)
    frobenius = torch.linalg.matrix_norm(post.scale_tril + 1e-6 - eye, ord="fro")  # (B,)
    return frobenius + torch.linalg.vector_norm(post.mean, dim=-1)


def half_squared_norm(post: Posterior, samples: Samples) -> torch.Tensor:
    """1/2 ||z||^2 of the decoded latents (RAE, Ghosh et al. 2020, Eq. 15's ||z||^2 term)."""
    return (samples.weights[:, None] * 0.5 * samples.z.pow(2).sum(-1)).sum(0)


def norm(post: Posterior, samples: Samples) -> torch.Tensor:
    """||z||_2, unsquared, of the decoded latents: the UAE authors' RAE code
    (boschresearch/unscented-autoencoder, models/rae.py l. 153); `l2` is RAE's 1/2 ||z||^2."""
    return (samples.weights[:, None] * torch.linalg.vector_norm(samples.z, dim=-1)).sum(0)


def imq_kernel(a: torch.Tensor, b: torch.Tensor, scales=IMQ_SCALES) -> torch.Tensor:
    """sum_s C_s / (C_s + ||a_i - b_j||^2), C_s = 2 D s (the prior's variance is 1). (N, M)."""
    sq = torch.cdist(a, b).pow(2)
    c0 = 2.0 * a.shape[-1]
    return sum(c0 * s / (c0 * s + sq) for s in scales)


def mmd_to_standard_normal(post: Posterior, samples: Samples) -> torch.Tensor:
    """Unbiased MMD^2 between the batch of latents and as many N(0, I) draws (WAE-MMD)."""
    z = samples.z.reshape(-1, samples.z.shape[-1])  # (S*B, D)
    n = z.shape[0]
    if n < 2:
        raise ValueError("the MMD regularizer needs a batch of at least 2 inputs")
    prior = torch.randn_like(z)
    off_diag = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    k_zz = (imq_kernel(z, z) * off_diag).sum() / (n * (n - 1))
    k_pp = (imq_kernel(prior, prior) * off_diag).sum() / (n * (n - 1))
    k_zp = imq_kernel(z, prior).mean()
    return k_zz + k_pp - 2 * k_zp


def no_regularizer(post: Posterior, samples: Samples) -> torch.Tensor:
    return post.mean.new_zeros(post.mean.shape[0])


REGULARIZERS: dict[str, Callable[[Posterior, Samples], torch.Tensor]] = {
    "kl": kl_to_standard_normal,
    "wasserstein": wasserstein2_to_standard_normal,
    "wasserstein_unsquared": wasserstein2_unsquared,
    "l2": half_squared_norm,
    "l2_unsquared": norm,
    "mmd": mmd_to_standard_normal,
    "none": no_regularizer,
}
