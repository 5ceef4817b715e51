"""The decoder-variance axis: the reconstruction term -log p(x | z) under each model of Sigma_x.

Every function takes x (B, *X), the decoded x_hat (S, B, *X), the sample weights (S,) and,
for the trainable parameterizations, log Sigma_x broadcastable to x_hat, and returns the
per-input loss (B,) and the variance it used (for logging).

- "sse": ||x - x_hat||^2 summed over pixels, as MVU-AE Eq. 18 writes it beside its code terms.
- "mse": ||x - x_hat||^2 / d_x, UAE Eq. 8 per pixel, as the UAE and RAE authors' code
  optimise it (a per-pixel mean), so their regularizer weights carry over unchanged.
- "fixed": the Gaussian NLL at a fixed sigma_x^2 (Takida Eq. 3; Dai & Wipf's fixed gamma).
- "*_mle": Takida's Table 2 / Appendix G: Sigma_x replaced by its maximum-likelihood estimate on
  the minibatch (Eq. 9a), so the term is the Gaussian NLL at that estimate (Eq. 10). Iso-I
  pools over inputs and pixels (G.4), Iso-D over pixels per input (G.7), Diag-I over inputs per
  pixel (G.11), Diag-D per input and pixel over the z draws (G.15). As the paper suggests, a
  small constant 1e-6 is added to the estimate except for Iso-I.
- "*_trainable": the Gaussian NLL with Sigma_x a trainable parameter (Takida Table 4's
  "trainable Sigma_x" rows; Iso-I is Dai & Wipf's learned gamma).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

MLE_EPS = 1e-6


def gaussian_nll(x: torch.Tensor, x_hat: torch.Tensor, weights: torch.Tensor,
                 var: torch.Tensor) -> torch.Tensor:
    """sum_s w_s sum_pixels 1/2 [(x - x_hat_s)^2 / var + log(2 pi var)]. (B,)"""
    per_pixel = 0.5 * ((x - x_hat).pow(2) / var + torch.log(2 * math.pi * var))  # (S, B, *X)
    return _weighted(per_pixel, weights).flatten(1).sum(-1)


def _weighted(t: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_s w_s t_s over the first axis. (S, B, *X) -> (B, *X)"""
    return (weights.view(-1, *([1] * (t.dim() - 1))) * t).sum(0)


def squared_error(x, x_hat, weights, log_var=None, cfg=None):
    """||x - x_hat||^2 / d_x, the mean over pixels (UAE Eq. 8 per pixel)."""
    return _weighted((x - x_hat).pow(2), weights).flatten(1).mean(-1), None


def summed_squared_error(x, x_hat, weights, log_var=None, cfg=None):
    """||x - x_hat||^2 summed over pixels (MVU-AE Eq. 18)."""
    return _weighted((x - x_hat).pow(2), weights).flatten(1).sum(-1), None


def fixed_variance(x, x_hat, weights, log_var=None, cfg=None):
    var = x.new_tensor(cfg.sigma_x2)
    return gaussian_nll(x, x_hat, weights, var), var


def _mle(reduce_dims: Callable[[torch.Tensor], tuple[int, ...]], eps: float | None):
    """The NLL at the MLE of the variance, averaging the squared error over `reduce_dims`;
    `eps` added to it (None: the config's mle_eps, default MLE_EPS, Takida's 1e-6)."""
    def nll_at_mle(x, x_hat, weights, log_var=None, cfg=None):
        err2 = _weighted((x - x_hat).pow(2), weights)  # (B, *X): E_q[(x - mu_theta(z))^2]
        dims = reduce_dims(err2)
        eps_ = eps if eps is not None else (cfg.mle_eps if cfg is not None else MLE_EPS)
        # an empty dims tuple would make torch's mean reduce over everything
        var = ((err2.mean(dim=dims, keepdim=True) if dims else err2) + eps_).detach()
        # var is held fixed in the gradient, as in the alternating update of Eq. 9a/9b: the
        # gradient is then exactly that of the closed forms G.5-G.17 (with the 1e-6 inside
        # the log), where differentiating through var would double it for errors near eps
        return gaussian_nll(x, x_hat, weights, var), var
    return nll_at_mle


iso_i_mle = _mle(lambda e: tuple(range(e.dim())), 0.0)  # one scalar (G.4)
iso_d_mle = _mle(lambda e: tuple(range(1, e.dim())), None)  # per input (G.7)
diag_i_mle = _mle(lambda e: (0,), None)  # per pixel (G.11)
diag_d_mle = _mle(lambda e: (), None)  # per input and pixel (G.15)


def trainable_variance(x, x_hat, weights, log_var=None, cfg=None):
    var = torch.exp(log_var)
    return gaussian_nll(x, x_hat, weights, var), var.detach()


RECONSTRUCTIONS: dict[str, Callable] = {
    "mse": squared_error,
    "sse": summed_squared_error,
    "fixed": fixed_variance,
    "iso_i_mle": iso_i_mle,
    "iso_d_mle": iso_d_mle,
    "diag_i_mle": diag_i_mle,
    "diag_d_mle": diag_d_mle,
    "iso_i_trainable": trainable_variance,
    "iso_d_trainable": trainable_variance,
    "diag_i_trainable": trainable_variance,
    "diag_d_trainable": trainable_variance,
}

# Where the trainable log Sigma_x lives: a free parameter shared by all inputs ("I", one
# value or one per pixel) or a linear head on z ("D", one value or one per pixel per input).
TRAINABLE_VARIANCE_SHAPES: dict[str, tuple[str, str]] = {
    "iso_i_trainable": ("independent", "isotropic"),
    "diag_i_trainable": ("independent", "diagonal"),
    "iso_d_trainable": ("dependent", "isotropic"),
    "diag_d_trainable": ("dependent", "diagonal"),
}
