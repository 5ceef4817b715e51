"""Diagnostics that explain how a Gaussian autoencoder uses its latent space, not how good it is.

- `takida_table1`: Takida et al.'s Table 1 criteria (Sec. 4.2 "Criteria", Eq. 5-6, Appendix C,
  Appendix D incl. Eq. D.1): expected gap, expected local smoothness (ELS), KL, sigma_z^2, MSE
  and the MI upper bound.
- `encoder_spectrum`: Dai & Wipf's encoder-covariance eigenvalues lambda_j (Sec. 3 Eq. 9,
  Appendix C Fig. 11): how many latent dimensions are active (lambda -> 0) and how many are
  superfluous (lambda -> 1), beside the decoder variance gamma.
- `gradient_variance`: the UAE's claim (Sec. 4.2, Fig. 1c, Appendix B) that sigma points give
  lower-variance encoder gradients than the reparameterization trick.

Pure functions: a model and a tensor of images (N, C, H, W) in, Python floats (and one numpy
array) out; no Ray, no files. Work is batched (`batch_size`) on the device of the model's
parameters, and the model is evaluated in eval mode (BatchNorm on its running statistics, so
batching does not change the result) and handed back exactly as it came: parameters, .grad,
config, the training flag of every submodule and the global RNG state. Random draws come from
a `seed`, so a call is deterministic.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

import models
from engine.eval.metrics import evaluating
from models import float_images

# Elements of the largest (queries x components x D) block the MI bound builds at once.
_MI_BLOCK = 1 << 24


# --------------------------------------------------------------------------- model handling

def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(images: torch.Tensor, batch_size: int, device: torch.device
             ) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield float_images(images[i:i + batch_size], device)


def _is_point(scale_tril: torch.Tensor) -> bool:
    """A deterministic encoder (posterior "point") has L = 0; Gaussian posteriors have a
    positive diagonal (posteriors.py clamps log sigma^2 so it never underflows to 0)."""
    return not bool(scale_tril.any())


def _check_gaussian(scale_tril: torch.Tensor) -> None:
    if not bool((torch.diagonal(scale_tril, dim1=-2, dim2=-1) > 0).all()):
        raise ValueError("a posterior with some zero and some positive variances has neither a "
                         "density nor a point mass; the KL and the MI bound are undefined")


# --------------------------------------------------------------------------- Takida Table 1

def kl_to_standard_normal(mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, L L^T) || N(0, I)), (B,): the model library's own KL regularizer (Takida Sec.
    3.1 below Eq. 3; Dai & Wipf Eq. 9 with a full Sigma_z), on these moments."""
    return models.kl_to_standard_normal(models.Posterior(mean, scale_tril), None)


def expected_gap(decode, mean: torch.Tensor, s_z2: float, draws: int,
                 generator: torch.Generator) -> torch.Tensor:
    """Takida Eq. 5 per input: the mean over `draws` iid pairs eps, eps' ~ N(0, s_z^2 I) of
    ||mu_theta(mu_phi(x) + eps) - mu_theta(mu_phi(x) + eps')||^2 (summed over pixels). (B,)"""
    eps = torch.randn(2, draws, *mean.shape, generator=generator, device=mean.device,
                      dtype=mean.dtype)  # (2, draws, B, D)
    x_hat = decode(mean + math.sqrt(s_z2) * eps)  # (2, draws, B, *X)
    return (x_hat[0] - x_hat[1]).pow(2).flatten(2).sum(-1).mean(0)


def local_smoothness(decode, z: torch.Tensor) -> torch.Tensor:
    """||d mu_theta / dz (z)||_F^2 per latent (Takida Eq. 6 before the expectation), exactly:
    one forward-mode JVP per latent dimension gives the Jacobian's column j for the whole
    batch (the decoder maps every row on its own in eval mode). z: (B, D) -> (B,)"""
    total = z.new_zeros(z.shape[0])
    for j in range(z.shape[1]):
        tangent = torch.zeros_like(z)
        tangent[:, j] = 1
        _, column = torch.func.jvp(decode, (z,), (tangent,))  # (B, *X) = J[:, :, j]
        total += column.pow(2).flatten(1).sum(-1)
    return total


def draw_posterior(mean: torch.Tensor, scale_tril: torch.Tensor, draws: int,
                   generator: torch.Generator) -> torch.Tensor:
    """`draws` latents z = mu + L eps from each input's posterior. (draws, N, D)"""
    eps = torch.randn(draws, *mean.shape, generator=generator, device=mean.device,
                      dtype=mean.dtype)
    return mean + torch.einsum("bij,sbj->sbi", scale_tril, eps)


def reconstruction_error(decode, x: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor,
                         draws: int, generator: torch.Generator) -> torch.Tensor:
    """Takida Table 1's MSE per input: E_q(z|x) ||x - mu_theta(z)||^2, summed over pixels (the
    caption's "expected value of ||x' - x||_2^2", x' = mu_theta(z), z ~ q(z|x), Definition 1),
    a mean over `draws` draws z = mu + L eps. (B,)"""
    z = draw_posterior(mean, scale_tril, draws, generator)  # (draws, B, D)
    return (x - decode(z)).pow(2).flatten(2).sum(-1).mean(0)


def _whiten(diff: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """L^{-1} diff for a batch of factors: diff (M, Q, D), scale_tril (M, D, D) -> (M, Q, D).
    A division where L is diagonal (the common case, and much cheaper)."""
    if not bool(torch.tril(scale_tril, diagonal=-1).any()):
        return diff / torch.diagonal(scale_tril, dim1=-2, dim2=-1)[:, None]
    return torch.linalg.solve_triangular(scale_tril, diff.transpose(1, 2),
                                         upper=False).transpose(1, 2)


def _log_normalizer(scale_tril: torch.Tensor) -> torch.Tensor:
    """log((2 pi)^(D/2) |L|) per factor. (M,)"""
    d = scale_tril.shape[-1]
    log_diag = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1))
    return log_diag.sum(-1) + 0.5 * d * math.log(2 * math.pi)


def log_posterior(z: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log q(z[s, n] | x_n) = log N(z[s, n]; mu_n, L_n L_n^T), each draw under its own
    input's posterior. z: (S, N, D) -> (S, N)"""
    white = _whiten((z - mean).transpose(0, 1), scale_tril)  # (N, S, D)
    return (-0.5 * white.pow(2).sum(-1) - _log_normalizer(scale_tril)[:, None]).T


def log_aggregate_posterior(z: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor
                            ) -> torch.Tensor:
    """log q(z) = log 1/M sum_m N(z; mu_m, L_m L_m^T), the aggregate posterior of M inputs
    (Takida Appendix D, q(z) := E_p~data(x)[q(z|x)]). z: (Q, D) -> (Q,)

    Differences z - mu_m are formed explicitly (not expanded into z^2 - 2 z mu + mu^2, which
    cancels catastrophically when sigma is small), in blocks of at most _MI_BLOCK elements.
    """
    m, d = mean.shape
    log_norm = _log_normalizer(scale_tril)  # (M,)
    step = max(1, _MI_BLOCK // (m * d))
    out = []
    for q in z.split(step):
        white = _whiten(q[None] - mean[:, None], scale_tril)  # (M, Q, D)
        log_p = -0.5 * white.pow(2).sum(-1) - log_norm[:, None]  # (M, Q)
        out.append(torch.logsumexp(log_p, dim=0) - math.log(m))
    return torch.cat(out)


def mutual_information_bound(mean: torch.Tensor, scale_tril: torch.Tensor, z: torch.Tensor
                             ) -> float:
    """Takida Eq. D.1: the MI I(x; z) between the N inputs (uniform) and their latents, which
    bounds I(x'; z) and I(x; x') (Sec. 4.2), for Gaussian posteriors of any covariance:

        I = E_n E_q(z|x_n)[log q(z|x_n) - log q(z)],   q(z) = 1/N sum_m q(z|x_m),

    a Monte Carlo mean over z: (S, N, D), z[:, n] ~ q(z|x_n), each input keeping its own
    Sigma_n. For Takida's q(z|x) = N(mu(x), sigma_z^2 I) the normalisers cancel and a draw
    z = mu_n + sigma_z eps contributes -||eps||^2/2 - ln E_x' exp(-||z - mu(x')||^2/(2 sigma_z^2)):
    D.1, -E_q(z)[ln E_x' exp(...)] - d_z/2 (the paper prints d_x/2; the entropy of a
    d_z-dimensional Gaussian gives d_z/2), with its constant d_z/2 = E||eps||^2/2 replaced by each
    draw's own ||eps||^2/2. The expectation is the same; the draw-by-draw term is never above
    log N, is exactly 0 when all posteriors coincide and log N when they are far apart, where
    D.1's constant leaves noise of sd sqrt(d_z / (2 N S)) (0.02 at N = 10,000, S = 1, d_z = 8,
    as large as Table 1's collapsed-row MI, 0.00 or 0.03: our copy's extraction of that row
    cannot tell its KL from its MI; its 3.97e-4 is the ELS, see searches/papers.py).
    Cost: S N^2 D (diagonal) or S N^2 D^2 (full) operations, e.g. 10^9 for Takida's N = 10,000,
    S = 1, D = 8 full covariances: meant for an accelerator at the paper's minibatch size.
    """
    own = log_posterior(z, mean, scale_tril)  # (S, N)
    log_q = log_aggregate_posterior(z.reshape(-1, mean.shape[1]), mean, scale_tril)
    return float((own.reshape(-1) - log_q).mean())


def code_entropy(mean: torch.Tensor) -> float:
    """Eq. D.1 in the limit sigma_z^2 -> 0 (a deterministic encoder, Table 1's "deterministic
    encoding"): the entropy of the empirical distribution of the codes mu(x_n),
    -1/N sum_n log(c_n / N) with c_n the number of inputs sharing x_n's code; log N when all
    codes are distinct."""
    _, inverse, counts = torch.unique(mean, dim=0, return_inverse=True, return_counts=True)
    return float(-torch.log(counts[inverse].double() / len(mean)).mean())


def _sci(value: float) -> str:
    """1e-2 for 0.01, 2.5e-3 for 0.0025: the key suffix of an expected gap."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def takida_table1(model, images: torch.Tensor, s_z2: Sequence[float] = (1e-2, 1e-3),
                  draws: int = 8, batch_size: int = 256, mi_batch_size: int = 10_000,
                  seed: int = 0) -> dict[str, float]:
    """Takida et al. Table 1's criteria over `images`, means over inputs (and draws):

    "gap_<s>"   expected gap Delta^2(s_z^2) of Eq. 5 for each s in `s_z2` (1e-2, 1e-3 in the
                paper): `draws` pairs of perturbations of mu_phi(x) per input. For small s,
                Delta^2 / (2 s) -> ELS (Appendix C, Eq. C.8).
    "els"       expected local smoothness, Eq. 6: E_x ||grad mu_theta(mu_phi(x))||_F^2,
                exactly by forward-mode autodiff.
    "kl"        E_x KL(q(z|x) || N(0, I)) in closed form with the full covariance. NaN for a
                deterministic encoder: a point mass has no density, its KL is +inf and says
                nothing; Table 1 leaves KL (and sigma_z^2) out for deterministic encoding.
    "sigma_z2"  the learned sigma_z^2: the posterior variance averaged over inputs and latent
                dimensions (Takida's q(z|x) has one sigma_z^2; ours may vary). 0 for a point.
    "mse"       E_x E_q(z|x) ||x - mu_theta(z)||^2, summed over pixels as the paper's MSE
                is (its MNIST values, 7-25, are sums over 784 pixels), `draws` z per input.
    "mse_per_pixel"  the same divided by the pixel count, the scale of the engine's val/mse.
    "mi"        the MI upper bound of Appendix D, Eq. D.1 (`mutual_information_bound`),
                computed, as in the paper, on each minibatch of `mi_batch_size` inputs
                (10,000 there) with the aggregate posterior of that minibatch, then averaged
                (weighted by size; the images are split into near-equal minibatches so that a
                short remainder does not lower the bound's log N ceiling). A deterministic
                encoder gets D.1's sigma_z^2 -> 0 limit, the entropy of its codes (`code_entropy`,
                log N for distinct codes), which is why Table 1's deterministic MI sits near
                ln 10,000 = 9.2.

    The perturbations and z draws are Gaussian whatever the model's training sampler is:
    these are properties of q(z|x) and mu_theta. mu_theta is model.decode (no codebook).
    Appendix D evaluates MSE and KL on the training set; pass whichever images you mean.
    """
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    gap_keys = [f"gap_{_sci(s)}" for s in s_z2]
    sums = dict.fromkeys(gap_keys + ["els", "kl", "sigma_z2", "mse", "mi"], 0.0)
    n_total = len(images)
    n_chunks = max(1, math.ceil(n_total / mi_batch_size))
    point = None
    with evaluating(model), torch.no_grad():
        for chunk in torch.tensor_split(images, n_chunks):
            means, trils = [], []
            for x in _batches(chunk, batch_size, device):
                post = model.posterior(x)
                mean, tril = post.mean, post.scale_tril  # (B, D), (B, D, D)
                point = _is_point(tril) if point is None else point
                for key, s in zip(gap_keys, s_z2):
                    sums[key] += expected_gap(model.decode, mean, s, draws, generator).sum().item()
                sums["els"] += local_smoothness(model.decode, mean).sum().item()
                sums["sigma_z2"] += post.variance.mean(-1).sum().item()
                sums["mse"] += reconstruction_error(model.decode, x, mean, tril, draws,
                                                    generator).sum().item()
                if not point:
                    _check_gaussian(tril)
                    sums["kl"] += kl_to_standard_normal(mean, tril).sum().item()
                means.append(mean)
                trils.append(tril)
            mean, tril = torch.cat(means), torch.cat(trils)  # the minibatch of Eq. D.1
            if point:
                mi = code_entropy(mean)
            else:
                # float64: with sigma_z small against |mu|, float32 z = mu + L eps would keep
                # only a few bits of the noise that the mixture densities resolve
                mean, tril = mean.double(), tril.double()
                mi = mutual_information_bound(mean, tril, draw_posterior(mean, tril, draws,
                                                                         generator))
            sums["mi"] += mi * len(chunk)
    out = {key: value / n_total for key, value in sums.items()}
    if point:
        out["kl"] = math.nan
    out["mse_per_pixel"] = out["mse"] / math.prod(images.shape[1:])
    return out


# --------------------------------------------------------------------------- Dai & Wipf

def decoder_gamma(model) -> float:
    """Dai & Wipf's decoder variance gamma (`model.decoder_gamma()`: their learned gamma, or
    the fixed sigma_x2 of their gamma = 1 baseline), NaN where the model has no single gamma
    (per-pixel or input-dependent variances, minibatch MLEs, plain squared errors)."""
    gamma = model.decoder_gamma()
    return math.nan if gamma is None else gamma


def encoder_spectrum(model, images: torch.Tensor, batch_size: int = 256,
                     near_zero: float = 0.1, near_one: float = 0.9
                     ) -> tuple[dict[str, float], np.ndarray]:
    """Dai & Wipf's eigenvalues lambda_j of the encoder covariance Sigma_z (Sec. 3 below Eq. 9,
    Appendix C Fig. 11): r of them go to 0 (active, "low-noise" dimensions that carry x) and
    kappa - r to 1 (superfluous dimensions filled with prior noise the decoder ignores).

    Returns the spectrum, the eigenvalues of the average encoder covariance E_x[Sigma_z(x)]
    in ascending order, (D,): for the diagonal encoders Dai & Wipf train this is each
    dimension's mean encoder variance, one lambda_j per latent dimension as in Fig. 1 (centre,
    rows "ordered by the eigenvalues lambda_j") and the histogram of Fig. 11; for full
    covariances it is the spectrum of the average. And the counts:

    "active_dims"        lambda_j < near_zero
    "inactive_dims"      lambda_j > near_one (the paper's superfluous dimensions)
    "intermediate_dims"  the rest, neither collapsed to 0 nor to the prior
    "active_dims_per_input"  Eq. 9's r-hat per input, the number of eigenvalues of Sigma_z(x)
                         below near_zero, averaged over inputs (differs from active_dims when
                         inputs keep different dimensions or eigenvectors active)
    "gamma"              the decoder variance (`decoder_gamma`)

    Thresholds: Fig. 11 shows lambda_j piling up at 0 and 1; 0.1 and 0.9 are the outer bins
    of a ten-bin histogram of [0, 1]. A dimension with variance 0.9 costs 1/2 (0.9 - 1 -
    ln 0.9) = 0.003 nats of KL, i.e. it is prior noise; one with 0.1 costs 0.7 nats and has
    an encoder noise std of 0.3, a third of the prior's. A deterministic encoder has Sigma_z = 0,
    so all its D dimensions count as active (noise-free), literally but uninformatively.
    """
    device = _device(model)
    d = model.cfg.latent_dim
    total = torch.zeros(d, d, dtype=torch.float64, device=device)
    active_per_input = 0.0
    with evaluating(model), torch.no_grad():
        for x in _batches(images, batch_size, device):
            cov = model.posterior(x).covariance.double()  # (B, D, D)
            total += cov.sum(0)
            active_per_input += (torch.linalg.eigvalsh(cov) < near_zero).sum().item()
    spectrum = torch.linalg.eigvalsh(total / len(images)).cpu().numpy()  # ascending
    active = int((spectrum < near_zero).sum())
    inactive = int((spectrum > near_one).sum())
    stats = {"active_dims": float(active), "inactive_dims": float(inactive),
             "intermediate_dims": float(d - active - inactive),
             "active_dims_per_input": active_per_input / len(images),
             "gamma": decoder_gamma(model)}
    return stats, spectrum


# --------------------------------------------------------------------------- UAE Appendix B

def encoder_gradient(model, images: torch.Tensor, params: Sequence[torch.Tensor],
                     batch_size: int, sampling: str | None = None) -> torch.Tensor:
    """d loss / d (encoder parameters), flattened, for the mean loss over `images` (the
    minibatch), accumulated over pieces of `batch_size`, with z drawn by `sampling` (None:
    the model's own). torch.autograd.grad leaves every parameter's .grad untouched. (P,)"""
    device = _device(model)
    total = None
    for x in _batches(images, batch_size, device):
        loss = model.loss(x, sampling=sampling)["loss"] * (len(x) / len(images))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                          for g, p in zip(grads, params)])
        total = flat if total is None else total + flat
    return total


def gradient_variance(model, images: torch.Tensor,
                      samplings: Sequence[str] = models.UAE_GRADIENT_SAMPLINGS, draws: int = 32,
                      batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """The spread of the encoder's gradient estimate under each sampling scheme (UAE Sec. 4.2
    and Fig. 1c: sigma points give "a more accurate and lower-variance estimate" than random
    draws; the paper's Appendix B, which tests this, is not in our copy of the paper).

    `images` is one minibatch, held fixed: the loss model.loss(images, sampling=s)["loss"] (the
    model's own loss with only its sampling changed, see `Config.with_sampling`; the model and
    its config are left as they are) is recomputed `draws` times with fresh sampling noise and
    differentiated with respect to the encoder's parameters phi. Fixing the minibatch isolates
    the noise the sampler adds (minibatch noise would add the same data-sampling term to every
    scheme). Per scheme:

    "grad_var_<s>"     tr Cov[g] = sum over parameters of the unbiased (1/(draws-1)) variance
                       of d loss / d phi over the draws
    "grad_sqnorm_<s>"  E||g||^2 over the draws (= ||E g||^2 + (draws-1)/draws tr Cov)

    Randomness: the samplers draw from torch's global RNG, so each scheme runs in a forked RNG
    seeded with torch.manual_seed(seed), its draws in order; the caller's RNG state is kept.
    A deterministic encoder (posterior "point") decodes z = mu under every scheme, so its
    gradient has no sampling noise: grad_var is 0 by definition, grad_sqnorm that of the one
    gradient with sampling="mean". "unscented_all" is deterministic too and gives exactly 0.
    """
    if draws < 2:
        raise ValueError(f"draws={draws}: a variance needs at least 2 draws")
    device = _device(model)
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    point = model.deterministic
    fork_devices = [device] if device.type == "cuda" else []
    out: dict[str, float] = {}
    for name in samplings:
        if name not in models.axis_values("sampling"):  # a point posterior never builds it
            raise models.ConfigError(f"sampling={name!r} is not one of "
                                     f"{', '.join(models.axis_values('sampling'))}")
        # a point posterior decodes z = mu under every scheme: the posterior mean's sampler
        sampling = models.MEAN_SAMPLING if point else name
        with evaluating(model), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            if point:
                g = encoder_gradient(model, images, params, batch_size, sampling).double()
                out[f"grad_var_{name}"] = 0.0
                out[f"grad_sqnorm_{name}"] = float(g.pow(2).sum())
                continue
            # Welford's running mean and sum of squared deviations, in float64, so that the
            # draws never need to be held at once (P can be millions)
            mean = m2 = None
            sqnorm = 0.0
            for k in range(1, draws + 1):
                g = encoder_gradient(model, images, params, batch_size, sampling).double()  # (P,)
                sqnorm += float(g.pow(2).sum())
                if mean is None:
                    mean, m2 = g.clone(), torch.zeros_like(g)
                else:
                    delta = g - mean
                    mean += delta / k
                    m2 += delta * (g - mean)
        out[f"grad_var_{name}"] = float(m2.sum()) / (draws - 1)
        out[f"grad_sqnorm_{name}"] = sqnorm / draws
    return out
