"""Negative log-likelihood upper bound by k-sample importance weighting (Takida Sec. 6.4 / Table 7).

Takida et al. report "the upper bound of the negative log likelihood (nats) ... obtained with
k-sample importance weighting with k = 500 on the test set" (Table 7), citing Burda et al.
(2016, IWAE, Eq. 8 / Theorem 1):

    log p(x) >= L_k(x) = E[ log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x) ],  z_i ~ q(z | x),

with p(z) = N(0, I) (the VAE prior, Takida Eq. 1-2) and p(x | z) = N(x; mu_theta(z), Sigma_x)
(Takida Eq. 7b). L_k increases with k and tends to log p(x) (Burda et al., Theorem 1); when q is
the exact posterior every weight equals p(x) and L_k = log p(x) for every k.

Sigma_x at evaluation time, by where the model says it comes from (`model.variance_source`;
Takida does not say; the decisions, each a source of models/variances.py):

- CONSTANT ("fixed"): sigma_x2 I (Takida's baseline "VAE (sigma_x^2 = 1.0)" of Table 7).
- LATENT ("*_trainable"): exp(log Sigma_x(z)), the model's own learned variance for each z_i.
- DATA ("iso_i_mle" / "diag_i_mle"): the variance is a property of the model, not of an input,
  so it is the maximum-likelihood estimate on the TRAINING set, Takida Eq. 9a as G.4 (one
  scalar, pooled over inputs and pixels) and G.11 (one per pixel, pooled over inputs): the
  population version of the per-minibatch estimate used in training, with the expectation over
  q(z|x) estimated by `train_draws` draws per training image. The config's mle_eps (1e-6) is
  added except for Iso-I, as in training (Takida Sec. 5.2; models/variances.py).
- INPUT ("iso_d_mle" / "diag_d_mle"): the parameterization makes Sigma_x a function of the
  input itself, sigma_x^2(x) = E_q(z|x)[(x - mu_theta(z))^2] averaged over pixels (G.7) or per
  pixel (G.15), and the model defines no other value for an unseen x. So it is the per-input
  MLE on the test input, estimated from the same k draws z_i ~ q(z|x) that the importance sum
  uses (+ mle_eps as in training). Caveat, to be kept in mind when comparing: Sigma_x is then
  fitted to x, so N(x; mu, Sigma_x(x)) is not a normalised density in x and the number is
  optimistic next to the input-independent parameterizations (it is the profile likelihood at
  the variance estimated from x), which may be part of why Diag-D has the lowest NLL of
  Takida Table 7.

Not computable (`NotComputable`, `model.likelihood_unavailable` says why): a plain squared
error ("mse"/"sse", no likelihood model for x), a point posterior (q has no density, so the
weights p q^-1 are undefined), a codebook that substitutes codes (VQ: the decoder only ever
sees the K codes, a discrete latent under no N(0, I) prior).

The bound is computed in float64 from the decoder's output on: the residuals are squared and
summed over pixels, and the log weights combined by logsumexp, in float64.
"""
from __future__ import annotations

import math

import torch

from models import CONSTANT, DATA, INPUT, LATENT, float_images

from engine.eval.metrics import evaluating

LOG_2PI = math.log(2 * math.pi)


class NotComputable(Exception):
    """A metric that has no value for this model; the message is one line saying why."""


def check_computable(model) -> None:
    """Raise NotComputable when the model defines no likelihood p(x) to bound."""
    reason = model.likelihood_unavailable
    if reason is not None:
        raise NotComputable(reason)


def _param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


def draw_posterior(post, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mu + L eps and log q(z | x) for eps ~ N(0, I) of shape (S, B, D).

    log N(z; mu, L L^T) = -1/2 ||L^-1 (z - mu)||^2 - log|det L| - D/2 log 2 pi, and
    L^-1 (z - mu) = eps, log|det L| = sum_j log L_jj (L triangular): no solve is needed, and a
    full-covariance posterior's off-diagonal L enters through z only. Returns z (S, B, D) in
    the model's dtype and log q (S, B) in float64.
    """
    z = post.mean + torch.einsum("bij,sbj->sbi", post.scale_tril, eps)  # (S, B, D)
    log_det = post.scale_tril.diagonal(dim1=-2, dim2=-1).double().log().sum(-1)  # (B,)
    d = eps.shape[-1]
    log_q = -0.5 * eps.double().pow(2).sum(-1) - log_det - 0.5 * d * LOG_2PI  # (S, B)
    return z, log_q


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), the prior p(z) (Takida Eq. 2). (S, B, D) -> (S, B) float64"""
    return -0.5 * z.double().pow(2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def gaussian_log_likelihood(x: torch.Tensor, x_hat: torch.Tensor, var: torch.Tensor
                            ) -> torch.Tensor:
    """log N(x; x_hat, diag(var)) summed over pixels (Takida Eq. 7b), in float64.

    x (B, *X), x_hat (S, B, *X), var broadcastable to x_hat. -> (S, B)
    """
    err2 = (x - x_hat).double().pow(2)  # float64 before the sum over d_x pixels
    var = var.double()
    per_pixel = err2 / var + torch.log(2 * math.pi * var)  # (S, B, *X)
    return -0.5 * per_pixel.flatten(2).sum(-1)


def _posterior_draws(model, images: torch.Tensor, draws: int, seed: int, batch_size: int):
    """(x (B, *X), q(z|x), eps (draws, B, D)) per batch of `batch_size` images, on the model's
    device, eps = randn((draws, B, D)) from one generator seeded with `seed`."""
    p = _param(model)
    gen = torch.Generator(device=p.device).manual_seed(seed)
    for i in range(0, len(images), batch_size):
        x = float_images(images[i:i + batch_size], p.device, p.dtype)
        post = model.posterior(x)
        yield x, post, torch.randn((draws, *post.mean.shape), generator=gen, device=p.device,
                                   dtype=p.dtype)


@torch.no_grad()
def training_set_variance(model, train_images: torch.Tensor, draws: int = 1, seed: int = 0,
                          batch_size: int = 256) -> torch.Tensor:
    """The input-independent MLE of Sigma_x on the training set (Takida Eq. 9a; G.4, G.11).

    sigma^2_i = E_{p_data(x) q(z|x)}[(x_i - mu_theta,i(z))^2] per pixel (Diag-I, G.11, + mle_eps),
    or its mean over pixels (Iso-I, G.4, no constant, as in training). The expectation over q
    uses `draws` reparameterised draws per training image, eps drawn per batch as
    randn((draws, B, D)) from one generator seeded with `seed`. Returns float64 broadcastable
    to one input (*X).
    """
    if model.variance_source != DATA:
        raise ValueError(f"decoder_variance={model.cfg.decoder_variance!r} has no "
                         "input-independent MLE (its variance is not estimated on the data)")
    total = torch.zeros(model.input_shape, dtype=torch.float64,
                        device=_param(model).device)  # (*X)
    with evaluating(model):
        for x, post, eps in _posterior_draws(model, train_images, draws, seed, batch_size):
            z, _ = draw_posterior(post, eps)
            total += (x - model.decode(z)).double().pow(2).sum((0, 1))
    per_pixel = total / (draws * len(train_images))  # (*X), G.11
    return model.estimate_variance(per_pixel[None])[0]  # G.11 + mle_eps, or G.4


def _input_dependent_variance(model, x: torch.Tensor, post, eps: torch.Tensor,
                              chunk: int) -> torch.Tensor:
    """sigma^2(x) = E_q[(x - mu_theta(z))^2] from the k draws eps (k, B, D): per pixel (Diag-D,
    G.15) or its mean over pixels (Iso-D, G.7), + mle_eps as in training. (B, *X) or (B, 1..)"""
    total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)  # (B, *X)
    for j in range(0, eps.shape[0], chunk):
        z, _ = draw_posterior(post, eps[j:j + chunk])
        total += (x - model.decode(z)).double().pow(2).sum(0)
    return model.estimate_variance(total / eps.shape[0])  # G.15 or G.7, + mle_eps


@torch.no_grad()
def decoder_variance_map(model, images: torch.Tensor, train_images: torch.Tensor | None = None,
                         draws: int = 8, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """The model's estimate of Sigma_x for each of `images` and each pixel, (N, *X) float64 on
    the CPU, as the NLL above takes it (Takida Sec. 5.3, Table 3's sigma-hat^2):

    - CONSTANT ("fixed"): sigma_x2 everywhere;
    - LATENT ("*_trainable"): exp(log Sigma_x(z)), averaged over `draws` draws z ~ q(z|x);
    - DATA ("iso_i_mle" / "diag_i_mle"): the training-set MLE (Eq. 9a as G.4 / G.11, + mle_eps
      except Iso-I), the same for every input (`train_images` required);
    - INPUT ("iso_d_mle" / "diag_d_mle"): the per-input MLE E_q[(x - mu_theta(z))^2] from
      `draws` draws, averaged over pixels (G.7) or per pixel (G.15), + mle_eps.
    Raises NotComputable for a model without one (a plain squared error). Draws as
    _posterior_draws'."""
    source = model.variance_source
    if source is None:
        raise NotComputable(f"decoder_variance={model.cfg.decoder_variance!r} has no decoder "
                            "variance")
    fixed = None
    if source == CONSTANT:
        fixed = model.estimate_variance(None)
    elif source == DATA:
        if train_images is None:
            raise ValueError(f"decoder_variance={model.cfg.decoder_variance!r} needs "
                             "train_images (Takida G.4/G.11)")
        fixed = training_set_variance(model, train_images, 1, seed, batch_size).cpu()
    if fixed is not None:
        return fixed.expand(len(images), *model.input_shape).clone()
    out = []
    with evaluating(model):
        for x, post, eps in _posterior_draws(model, images, draws, seed, batch_size):
            if source == INPUT:
                var = _input_dependent_variance(model, x, post, eps, draws)
            else:  # LATENT: the model's own variance at each draw, averaged
                z, _ = draw_posterior(post, eps)
                # (draws, B, *X), or (*X) for an input-independent parameter
                lv = model.decoder_log_variance(z).double()
                var = torch.exp(lv).expand(draws, len(x), *model.input_shape).mean(0)
            out.append(var.expand(x.shape).cpu())
    return torch.cat(out)


def log_marginal_estimate(model, x: torch.Tensor, eps: torch.Tensor,
                          var: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) (Burda et al. Eq. 8) for draws eps (k, B, D).

    `var` is Sigma_x for the fixed and input-independent variances, None for the trainable
    (exp(log Sigma_x(z)) per draw) and input-dependent (per-input MLE) ones. The decoder sees
    `chunk` draws at a time, so memory is chunk * B * d_x whatever k is. -> (B,) float64
    """
    post = model.posterior(x)
    source = model.variance_source
    if source == INPUT:
        var = _input_dependent_variance(model, x, post, eps, chunk)
    log_w = []
    for j in range(0, eps.shape[0], chunk):
        z, log_q = draw_posterior(post, eps[j:j + chunk])  # (S, B, D), (S, B)
        x_hat = model.decode(z)  # (S, B, *X)
        v = torch.exp(model.decoder_log_variance(z)) if source == LATENT else var
        log_w.append(gaussian_log_likelihood(x, x_hat, v) + log_standard_normal(z) - log_q)
    log_w = torch.cat(log_w)  # (k, B) float64
    return torch.logsumexp(log_w, 0) - math.log(eps.shape[0])


@torch.no_grad()
def iwae_nll(model, images: torch.Tensor, k: int = 500, batch_size: int = 100, seed: int = 0,
             train_images: torch.Tensor | None = None, train_draws: int = 1,
             chunk_elements: int = 2 ** 22) -> dict[str, float]:
    """The k-sample importance-weighted upper bound on the NLL, mean over `images` (Takida
    Sec. 6.4 / Table 7, k = 500; Burda et al. 2016 Eq. 8).

    Returns {"nll": -mean_x L_k(x) in nats per image, "nll_bpd": nll / (d_x ln 2)}, the latter
    in bits per dimension of the continuous density of x on the images' own scale (for data in
    [0, 1] quantised to 256 levels, add 8 to compare with discrete bits/dim).

    `train_images` is required for "iso_i_mle"/"diag_i_mle" (Sigma_x is their training-set
    MLE, see the module docstring). Draws: one torch.Generator on the model's device seeded with
    `seed`; for each batch of `batch_size` images, eps = randn((k, B, D)) from it, z = mu + L eps.
    Raises NotComputable for models without a likelihood (see `check_computable`).
    """
    cfg = model.cfg
    check_computable(model)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if len(images) == 0:
        raise ValueError("iwae_nll needs at least one image")
    var = None
    if model.variance_source == CONSTANT:
        var = model.estimate_variance(None)
    elif model.variance_source == DATA:
        if train_images is None:
            raise ValueError(f"decoder_variance={cfg.decoder_variance!r} needs train_images: "
                             "Sigma_x is its MLE on the training set (Takida G.4/G.11)")
        var = training_set_variance(model, train_images, train_draws, seed, batch_size)
    p = _param(model)
    if var is not None:
        var = var.to(p.device)
    d_x = math.prod(model.input_shape)
    gen = torch.Generator(device=p.device).manual_seed(seed)
    total = 0.0
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            x = float_images(images[i:i + batch_size], p.device, p.dtype)  # (B, *X)
            eps = torch.randn((k, x.shape[0], cfg.latent_dim), generator=gen, device=p.device,
                              dtype=p.dtype)  # (k, B, D): small next to the decoded images
            chunk = max(1, chunk_elements // (x.shape[0] * d_x))
            total += log_marginal_estimate(model, x, eps, var, chunk).sum().item()
    nll = -total / len(images)
    return {"nll": nll, "nll_bpd": nll / (d_x * math.log(2))}
