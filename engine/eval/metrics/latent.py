"""MVU-AE Table 4: the variance of the latent representation ("Var.") and the perceptual path
length ("PPL") of its interpolations.

Latent variance. MVU-AE (Sec. 3.1, Eq. 3-5) asks for the estimator z_hat of the true factor z*
with minimum Var(z_hat), where the estimator is the encoder's output z_hat(x) = f_phi(x)
(Eq. 12), for a VAE the posterior mean E_q(z|x)[z] (Eq. 14), for VQ-VAE the code z_q(x)
(Eq. 16). Table 4 reports "the variance in the latent representation z" without a formula, and
Var(z_hat) given z* cannot be measured without z*. The measurable quantity closest to it, and
the one we report as "latent_var", is the total variance of z_hat over the evaluation images:

    latent_var = tr Cov_x[z_hat(x)] = sum_j Var_x[z_hat_j(x)]    (unbiased, 1/(N-1)),

the sum over latent dimensions rather than their mean because Table 4's values (57-215 for a
KL-regularised VAE, whose per-dimension variance of posterior means is at most about 1 when the
aggregate posterior matches N(0, I)) can only be totals. The mean over dimensions
("latent_var_per_dim") and the mean posterior spread E_x tr Sigma_phi(x) ("latent_posterior_var",
0 for deterministic encoders) are reported beside it.

Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture for GANs",
Sec. 4.1 Eq. 2, and the StyleGAN code metrics/perceptual_path_length.py):

    PPL = E[ d(G(slerp(z1, z2; t)), G(slerp(z1, z2; t + eps))) / eps^2 ],  t ~ U(0, 1),

eps = 1e-4, the expectation over 100k pairs, after discarding the distances below the 1st
(numpy "lower") and above the 99th (numpy "higher") percentile. G is the decoder mean (through
the codebook for VQ models, whose decoder only ever sees codes), d a callable on two image
batches (the caller's LPIPS, with whatever resizing or cropping it wants). The images are the
decoder's outputs as they are, in [0, 1] for sigmoid decoders: an LPIPS distance maps them to
[-1, 1] itself (lpips' normalize=True).

Where z1, z2 come from. MVU-AE Sec. 5.5 measures "the interpolability of the latent space" of
deterministic autoencoders (MVU-AE, VQGAN) beside VAEs, and MVU-AE has no prior to sample from;
the only source common to every row is the encoded images. So `table4` (the documented default
for reproducing Table 4) interpolates between encoder means of pairs of distinct test images;
`perceptual_path_length` also takes a sampler (e.g. a fitted density's .sample) or, with
latents=None, draws from the N(0, I) prior, which is StyleGAN's P(z).

Slerp. StyleGAN's slerp projects both ends onto the unit sphere, harmless there because its
mapping network normalises z first. Our decoders are not scale invariant, so the default
"slerp" is White (2016)'s, which RAE (Ghosh et al. 2020) and Takida (Sec. 6.2) use for
autoencoder latents: sin((1-t) W)/sin W z1 + sin(t W)/sin W z2, W the angle between z1 and z2.
"slerp_unit" is StyleGAN's exactly, "lerp" the linear path (StyleGAN's PPL in W).
"""
from __future__ import annotations

from typing import Callable

import torch

from engine.eval.metrics import evaluating
from models import float_images

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, C, H, W) x 2 -> (B,)
Sampler = Callable[[int, int], torch.Tensor]  # (n, seed) -> (n, D), e.g. Density.sample


def _param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


# ---------------------------------------------------------------------------------------------
# Latent variance
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def encoded_latents(model, images: torch.Tensor, batch_size: int = 512,
                    quantize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's estimate z_hat(x) = mu_phi(x) (MVU-AE Eq. 12/14), replaced by its nearest
    code when `quantize` and the model's decoder sees only codes (VQ, Eq. 16), and the spread
    tr Sigma_phi(x). -> (N, D) on the model's device, (N,) float64"""
    p = _param(model)
    means, spreads = [], []
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            post = model.posterior(float_images(images[i:i + batch_size], p.device, p.dtype))
            z = post.mean  # (B, D)
            if quantize:
                z = model.quantize(z)
            means.append(z)
            spreads.append(post.variance.double().sum(-1))  # (B,) tr(L L^T)
    return torch.cat(means), torch.cat(spreads)


@torch.no_grad()
def latent_variance(model, images: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """MVU-AE Table 4 "Var.": the total variance tr Cov_x[z_hat(x)] of the latent representation
    over `images` (module docstring; MVU-AE Eq. 3-5, 12, 14, 16).

    Returns {"latent_var": sum_j Var_x z_hat_j, "latent_var_per_dim": its mean over the D
    dimensions, "latent_posterior_var": E_x tr Sigma_phi(x)}; variances unbiased (1/(N-1)),
    computed in float64.
    """
    if len(images) < 2:
        raise ValueError(f"latent_variance needs at least 2 images, got {len(images)}")
    z, spread = encoded_latents(model, images, batch_size, quantize=True)
    var = z.double().var(0, correction=1)  # (D,)
    return {"latent_var": var.sum().item(), "latent_var_per_dim": var.mean().item(),
            "latent_posterior_var": spread.mean().item()}


# ---------------------------------------------------------------------------------------------
# Interpolation paths
# ---------------------------------------------------------------------------------------------

def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a + t (b - a). a, b (N, D), t (N,) -> (N, D)"""
    return a + t[:, None] * (b - a)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """White (2016): sin((1-t) W)/sin W a + sin(t W)/sin W b, W = angle(a, b). (N, D)

    Equal to a at t = 0 and b at t = 1, along the great circle when |a| = |b|. Where a and b
    are (anti)parallel, sin W ~ 0 and the path is undefined; lerp is used there."""
    cos = (_unit(a) * _unit(b)).sum(-1).clamp(-1.0, 1.0)  # (N,)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    ok = sin > 1e-6
    safe = torch.where(ok, sin, torch.ones_like(sin))
    wa = torch.where(ok, torch.sin((1 - t) * omega) / safe, 1 - t)  # (N,)
    wb = torch.where(ok, torch.sin(t * omega) / safe, t)
    return wa[:, None] * a + wb[:, None] * b


def slerp_unit(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """StyleGAN's slerp (metrics/perceptual_path_length.py): both ends normalised, the point at
    angle t W from a/|a| towards b/|b| on the unit sphere. (N, D)"""
    a, b = _unit(a), _unit(b)
    d = (a * b).sum(-1, keepdim=True)  # (N, 1)
    p = t[:, None] * torch.arccos(d.clamp(-1.0, 1.0))
    c = _unit(b - d * a)
    return _unit(a * torch.cos(p) + c * torch.sin(p))


INTERPOLATIONS: dict[str, Callable] = {"slerp": slerp, "slerp_unit": slerp_unit, "lerp": lerp}


def path_samples(n: int, latent_dim: int, latents: torch.Tensor | Sampler | None = None,
                 seed: int = 0, sampling: str = "full", device=None, dtype=torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The n path ends z1, z2 (n, D) and positions t (n,) that PPL evaluates.

    latents=None: z1, z2 ~ N(0, I); a tensor (N, D): z1, z2 two distinct rows drawn uniformly;
    a callable: sampler(2n, seed) split in two. t ~ U(0, 1) ("full") or 0 ("end", Karras et al.
    Sec. 4.1). Everything random comes from one torch.Generator on `device` seeded with `seed`.
    """
    if sampling not in ("full", "end"):
        raise ValueError(f"sampling={sampling!r} is not one of full, end")
    gen = torch.Generator(device=device).manual_seed(seed)
    if latents is None:
        z = torch.randn((2, n, latent_dim), generator=gen, device=device, dtype=dtype)
        z1, z2 = z[0], z[1]
    elif isinstance(latents, torch.Tensor):
        m = len(latents)
        if m < 2:
            raise ValueError(f"need at least 2 latents to interpolate between, got {m}")
        i = torch.randint(m, (n,), generator=gen, device=device)
        j = (i + torch.randint(1, m, (n,), generator=gen, device=device)) % m  # j != i
        pool = latents.to(device, dtype)
        z1, z2 = pool[i], pool[j]
    else:
        z = latents(2 * n, seed).to(device, dtype)
        z1, z2 = z[:n], z[n:]
    t = torch.rand((n,), generator=gen, device=device, dtype=dtype)
    if sampling == "end":
        t = torch.zeros_like(t)
    return z1, z2, t


def filtered_mean(distances: torch.Tensor, low: float = 1.0, high: float = 99.0) -> float:
    """The mean of the distances within [P_low ("lower"), P_high ("higher")], StyleGAN's
    outlier rejection: np.percentile(d, 1, "lower") <= d <= np.percentile(d, 99, "higher")."""
    d = distances.double().flatten()
    lo = torch.quantile(d, low / 100, interpolation="lower")
    hi = torch.quantile(d, high / 100, interpolation="higher")
    return d[(lo <= d) & (d <= hi)].mean().item()


# ---------------------------------------------------------------------------------------------
# Perceptual path length
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def path_distances(model, z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor,
                   distance: Distance, epsilon: float = 1e-4, interpolation: str = "slerp",
                   batch_size: int = 256) -> torch.Tensor:
    """d(G(path(t)), G(path(t + eps))) / eps^2 for each of the n pairs (Karras et al. Eq. 2,
    before the expectation). -> (n,) float64 on the model's device"""
    path = INTERPOLATIONS[interpolation]
    out = []
    with evaluating(model):
        for i in range(0, len(t), batch_size):
            a, b, s = z1[i:i + batch_size], z2[i:i + batch_size], t[i:i + batch_size]
            z = torch.cat([path(a, b, s), path(a, b, s + epsilon)])  # (2B, D): one decoder call
            images = model.generate(z)  # (2B, *X)
            n = len(s)
            out.append(distance(images[:n], images[n:]).double() / epsilon ** 2)  # (B,)
    return torch.cat(out)


@torch.no_grad()
def perceptual_path_length(model, n: int, distance: Distance, epsilon: float = 1e-4,
                           latents: torch.Tensor | Sampler | None = None, seed: int = 0,
                           batch_size: int = 256, interpolation: str = "slerp",
                           sampling: str = "full") -> dict[str, float]:
    """PPL (Karras et al. 2019 Sec. 4.1 Eq. 2; MVU-AE Table 4): the 1%-99% filtered mean over n
    pairs of d(G(path(z1, z2; t)), G(path(z1, z2; t + eps))) / eps^2 (StyleGAN uses n = 100k).

    latents: None (N(0, I)), an (N, D) tensor to draw distinct pairs from (e.g. encoded test
    images, what `table4` passes), or sampler(n, seed) -> (n, D). interpolation: "slerp"
    (White 2016, default), "slerp_unit" (StyleGAN's), "lerp". Returns {"ppl"}.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not one of "
                         f"{', '.join(INTERPOLATIONS)}")
    p = _param(model)
    z1, z2, t = path_samples(n, model.cfg.latent_dim, latents, seed, sampling, p.device, p.dtype)
    d = path_distances(model, z1, z2, t, distance, epsilon, interpolation, batch_size)
    return {"ppl": filtered_mean(d)}


def table4(model, images: torch.Tensor, distance: Distance, n: int = 100_000,
           epsilon: float = 1e-4, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """MVU-AE Table 4 for one model: the latent variance of `images` (the test set) and the PPL
    of slerp paths between the encoder means of pairs of distinct test images."""
    out = latent_variance(model, images, batch_size)
    z, _ = encoded_latents(model, images, batch_size)
    out.update(perceptual_path_length(model, n, distance, epsilon, latents=z, seed=seed,
                                      batch_size=batch_size))
    return out
