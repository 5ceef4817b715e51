"""The codebook axis: a learned set of K latent codes e_k (MVU-AE, VQ-VAE).

Each function takes the encoder mean mu (B, D), the latents to decode z (S, B, D) and the
codebook (K, D), and returns the latents the decoder sees and the codebook terms per input.
A `Codebook` also says whether the decoder only ever sees codes (`substitutes`): such a
model's latent is discrete, so generating from it goes through the nearest code and it has no
density under the N(0, I) prior (engine/metrics asks the model, never the value's name).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def nearest_code(v: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """e_k with k = argmin_k ||v - e_k|| (MVU-AE Eq. 16). (..., D)"""
    flat = v.reshape(-1, v.shape[-1])
    return codes[torch.cdist(flat, codes).argmin(-1)].reshape(v.shape)


def _codebook_terms(e: torch.Tensor, z_q: torch.Tensor) -> dict[str, torch.Tensor]:
    """||sg[E(x)] - z_q||^2 moves the codes; ||sg[z_q] - E(x)||^2 commits the encoder (Eq. 18)."""
    return {
        "codebook": (e.detach() - z_q).pow(2).sum(-1),
        "commitment": (z_q.detach() - e).pow(2).sum(-1),
    }


def no_codebook(mu, z, codes):
    return z, {}


def soft_codebook(mu, z, codes):
    """MVU-AE Eq. 18: both terms on E(x) = mu, with no substitution: the decoder sees z."""
    return z, _codebook_terms(mu, nearest_code(mu.detach(), codes))


def vector_quantized(mu, z, codes):
    """VQ-VAE: the decoder sees the nearest code; the straight-through estimator copies the
    decoder's gradient from z_q to z (z + sg[z_q - z])."""
    z_q = nearest_code(z.detach(), codes)  # (S, B, D)
    terms = _codebook_terms(z, z_q)
    return z + (z_q - z).detach(), {k: v.mean(0) for k, v in terms.items()}


@dataclass(frozen=True)
class Codebook:
    """One value of the codebook axis."""

    apply: Callable
    """(mu (B, D), z (S, B, D), codes (K, D) or None) -> (latents to decode, terms per input)."""
    substitutes: bool = False
    """The decoder sees only codes (a discrete latent), not the encoder's z."""

    def __call__(self, mu, z, codes):
        return self.apply(mu, z, codes)


CODEBOOKS: dict[str, Codebook] = {
    "none": Codebook(no_codebook),
    "soft": Codebook(soft_codebook),
    "vq": Codebook(vector_quantized, substitutes=True),
}
