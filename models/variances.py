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
- "diag_d_trainable_floor": Diag-D trainable with Sigma_x = exp(log Sigma_x) + var_floor
  (default 1e-6). Takida's paper gives a trainable Sigma_x no bound; the one lower bound it puts
  on a variance is the 1e-6 its MLEs add "considering the optimization stability" (Sec. 5.2,
  G.7-G.17), and it is that constant, added the same way, that the floor takes. Without it the
  per-pixel head drives log Sigma_x of MNIST's always-0 border pixels (where x_hat -> 0 and the
  squared error underflows to exactly 0) down without bound; once exp(log Sigma_x) is below
  float32's normal range (log Sigma_x < -87.3), the backward of log Sigma_x, 1 / Sigma_x,
  overflows to inf, the head's gradient is inf and every other one NaN (measured: epoch 8-9 of
  variance_parameterization's Diag-D-trainable, both seeds). With the floor, d loss / d log
  Sigma_x = 1/2 s (1 - err^2 / Sigma_x), s = exp(log Sigma_x) / Sigma_x in (0, 1), is bounded
  and vanishes below the floor instead of overflowing.

Each value is a `DecoderVariance`: the training term above and what evaluation needs to know
of Sigma_x (engine/eval/metrics/likelihood.py asks the model, never the value's name): where it comes
from at evaluation time (`source`) and how it is estimated from squared errors (`estimate`).
A value whose source is None defines no likelihood p(x | z) ("mse", "sse").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

MLE_EPS = 1e-6
VAR_FLOOR = 1e-6  # Takida's 1e-6 (Sec. 5.2, G.7-G.17), as the floor of a trainable Sigma_x

# Where evaluation takes Sigma_x from (Takida does not say; engine/eval/metrics/likelihood.py's
# docstring gives the reasons):
CONSTANT = "constant"  # a constant of the config: estimate(None, cfg)
DATA = "data"  # the MLE on the training set: estimate(E_{data, q}[(x - mu(z))^2] (1, *X), cfg)
INPUT = "input"  # the per-input MLE: estimate(E_q(z|x)[(x - mu(z))^2] (B, *X), cfg)
LATENT = "latent"  # the model's own log Sigma_x(z) per draw (a trainable one)
SOURCES = (CONSTANT, DATA, INPUT, LATENT)


@dataclass(frozen=True)
class DecoderVariance:
    """One value of the decoder-variance axis."""

    loss: Callable
    """(x (B, *X), x_hat (S, B, *X), weights (S,), log_var, cfg) -> (per-input loss (B,), the
    variance used or None): the reconstruction term of training."""
    source: str | None = None
    """Where evaluation takes Sigma_x from: CONSTANT, DATA, INPUT or LATENT; None when the
    value defines no likelihood p(x | z) (a plain squared error)."""
    estimate: Callable | None = None
    """(err2 or None, cfg) -> Sigma_x broadcastable to err2, for CONSTANT, DATA and INPUT."""
    trainable: tuple[str, str] | None = None
    """(dependence, shape) of a trainable log Sigma_x: ("independent" | "dependent",
    "isotropic" | "diagonal"), see autoencoder.TrainableLogVariance; None for no parameter."""
    floored: bool = False
    """A trainable Sigma_x is exp(log Sigma_x) + cfg.var_floor rather than exp(log Sigma_x)."""

    def __call__(self, x, x_hat, weights, log_var=None, cfg=None):
        return self.loss(x, x_hat, weights, log_var, cfg)

    def log_variance(self, log_var: torch.Tensor, cfg=None) -> torch.Tensor:
        """The log Sigma_x that the training term uses, from the trainable parameters' raw log
        Sigma_x: log(exp(log_var) + var_floor) for a floored value, else log_var itself. What
        evaluation should take as the model's log Sigma_x(z) (a LATENT source)."""
        if not self.floored:
            return log_var
        return torch.logaddexp(log_var, log_var.new_tensor(math.log(_var_floor(cfg))))


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


def _mle_eps(eps: float | None, cfg) -> float:
    """`eps` (None: the config's mle_eps, default MLE_EPS, Takida's 1e-6)."""
    return eps if eps is not None else (cfg.mle_eps if cfg is not None else MLE_EPS)


def _mle(over_inputs: bool, over_pixels: bool, eps: float | None) -> DecoderVariance:
    """The NLL at the MLE of the variance: the squared error averaged over the inputs of the
    minibatch (`over_inputs`) and/or the pixels (`over_pixels`), + `eps` (None: mle_eps).

    At evaluation a variance pooled over inputs is a property of the model, estimated on the
    training set (DATA); one that is not is a function of the input itself (INPUT)."""
    def pixel_mean(err2: torch.Tensor) -> torch.Tensor:  # (N, *X) -> (N, *X) or (N, 1..)
        return err2.mean(dim=tuple(range(1, err2.dim())), keepdim=True) if over_pixels else err2

    def nll_at_mle(x, x_hat, weights, log_var=None, cfg=None):
        err2 = _weighted((x - x_hat).pow(2), weights)  # (B, *X): E_q[(x - mu_theta(z))^2]
        pooled = pixel_mean(err2)
        if over_inputs:
            pooled = pooled.mean(0, keepdim=True)
        var = (pooled + _mle_eps(eps, cfg)).detach()
        # var is held fixed in the gradient, as in the alternating update of Eq. 9a/9b: the
        # gradient is then exactly that of the closed forms G.5-G.17 (with the 1e-6 inside
        # the log), where differentiating through var would double it for errors near eps
        return gaussian_nll(x, x_hat, weights, var), var

    def estimate(err2, cfg):
        return pixel_mean(err2) + _mle_eps(eps, cfg)

    return DecoderVariance(nll_at_mle, DATA if over_inputs else INPUT, estimate)


def trainable_variance(x, x_hat, weights, log_var=None, cfg=None):
    var = torch.exp(log_var)
    return gaussian_nll(x, x_hat, weights, var), var.detach()


def _var_floor(cfg) -> float:
    return cfg.var_floor if cfg is not None else VAR_FLOOR


def floored_variance(log_var: torch.Tensor, floor: float) -> torch.Tensor:
    """Sigma_x = exp(log_var) + floor: >= floor, smooth, with d Sigma_x / d log_var = exp(log_var),
    which underflows to 0 (not to a 0 * inf) far below the floor."""
    return torch.exp(log_var) + floor


def floored_trainable_variance(x, x_hat, weights, log_var=None, cfg=None):
    """The Gaussian NLL at Sigma_x = exp(log Sigma_x) + var_floor (see the module's docstring)."""
    var = floored_variance(log_var, _var_floor(cfg))
    return gaussian_nll(x, x_hat, weights, var), var.detach()


def _fixed_estimate(err2, cfg):
    return torch.tensor(cfg.sigma_x2, dtype=torch.float64)


def _trainable(dependence: str, shape: str, floored: bool = False) -> DecoderVariance:
    loss = floored_trainable_variance if floored else trainable_variance
    return DecoderVariance(loss, LATENT, trainable=(dependence, shape), floored=floored)


DECODER_VARIANCES: dict[str, DecoderVariance] = {
    "mse": DecoderVariance(squared_error),
    "sse": DecoderVariance(summed_squared_error),
    "fixed": DecoderVariance(fixed_variance, CONSTANT, _fixed_estimate),
    "iso_i_mle": _mle(over_inputs=True, over_pixels=True, eps=0.0),  # one scalar (G.4)
    "iso_d_mle": _mle(over_inputs=False, over_pixels=True, eps=None),  # per input (G.7)
    "diag_i_mle": _mle(over_inputs=True, over_pixels=False, eps=None),  # per pixel (G.11)
    "diag_d_mle": _mle(over_inputs=False, over_pixels=False, eps=None),  # per input, pixel (G.15)
    # where the trainable log Sigma_x lives: a free parameter shared by all inputs ("I", one
    # value or one per pixel) or a linear head on z ("D", one value or one per pixel per input)
    "iso_i_trainable": _trainable("independent", "isotropic"),
    "diag_i_trainable": _trainable("independent", "diagonal"),
    "iso_d_trainable": _trainable("dependent", "isotropic"),
    "diag_d_trainable": _trainable("dependent", "diagonal"),
    # the same with Sigma_x >= var_floor (Takida's 1e-6): per pixel, the always-0 pixels of
    # MNIST drive the unfloored one to a non-finite gradient (see the module's docstring)
    "diag_d_trainable_floor": _trainable("dependent", "diagonal", floored=True),
}
