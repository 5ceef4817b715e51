"""Ex-post densities over the latent space, fitted after training, for drawing new samples.

- "prior": N(0, I), the VAE's own prior.
- "gmm": a full-covariance Gaussian mixture fitted with scikit-learn (RAE, Ghosh et al. 2020;
  UAE Sec. 5.1 uses 10 components; Takida Table 4 also 100).
- "second_stage": a second VAE on the latents with its own learned gamma_z (Dai & Wipf Sec. 4):
  the same composed `GaussianAutoencoder` on D-dim vectors, with "mlp_skip" networks (the
  input beside the last hidden layer, as their code builds it), trained on a fresh draw
  z ~ q(z|x) of every image each epoch (their demo.py l. 74) and sampled as their step 3 says:
  u ~ N(0, I), z ~ N(f(u), gamma_z I) (demo's generate(): z = z_hat + gamma_z^(1/2) eps, their
  gamma_z being a standard deviation, network/two_stage_vae_model.py l. 45 and 144).

A density is fitted from `latents` (N, D), one latent per training image, and optionally
`redraw(k)`, the k-th independent draw of such latents (redraw(0) is `latents`): the second
stage takes draw k in epoch k; the prior and the GMM fit `latents` alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # scikit-learn (~1 s to import): only where a GMM is fitted or loaded
    from sklearn.mixture import GaussianMixture

from .config import Config
from .images import float_images
from .schedules import set_lr


class Density(Protocol):
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:  # (n, D)
        ...


class StandardNormal:
    def __init__(self, dim: int):
        self.dim = dim

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed))


class SklearnMixture:
    def __init__(self, gmm: GaussianMixture):
        self.gmm = gmm

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        self.gmm.random_state = seed  # GaussianMixture.sample draws from its random_state
        z, _ = self.gmm.sample(n)
        # sample() returns the draws grouped by component; shuffle so any prefix is a fair draw
        z = z[np.random.default_rng(seed).permutation(n)]
        return torch.as_tensor(z, dtype=torch.float32)


Redraw = Callable[[int], torch.Tensor]  # k -> (N, D), the k-th draw of one latent per image


def density_state(density: Density) -> dict[str, torch.Tensor]:
    """What sampling `density` needs, as tensors (engine/load.py exports them): a GMM's
    weights, means and covariances (float64, as fitted), a second stage's weights; {} for the
    prior. state_density rebuilds a density that draws the same samples per seed."""
    if isinstance(density, SklearnMixture):
        g = density.gmm
        return {f"gmm.{k}": torch.from_numpy(np.asarray(getattr(g, f"{k}_"), dtype=np.float64))
                for k in ("weights", "means", "covariances")}
    if isinstance(density, SecondStage):
        return {f"second_stage.{k}": v.detach().cpu() for k, v in density.vae.state_dict().items()}
    return {}


def state_density(state: dict[str, torch.Tensor], cfg: Config) -> Density:
    """The density of a density_state for the first stage `cfg` (its latent size; the second
    stage's networks follow from it, second_stage_config)."""
    if "gmm.means" in state:
        from sklearn.mixture import GaussianMixture
        from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky
        weights, means, covs = (state[f"gmm.{k}"].numpy()
                                for k in ("weights", "means", "covariances"))
        gmm = GaussianMixture(len(weights), covariance_type="full")
        gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covs
        gmm.precisions_cholesky_ = _compute_precision_cholesky(covs, "full")
        gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, 0, float("nan")
        return SklearnMixture(gmm)
    stage = {k.removeprefix("second_stage."): v for k, v in state.items()
             if k.startswith("second_stage.")}
    if stage:
        from .autoencoder import GaussianAutoencoder
        vae = GaussianAutoencoder(second_stage_config(cfg), (cfg.latent_dim,))
        vae.load_state_dict(stage)
        return SecondStage(vae.eval())
    return StandardNormal(cfg.latent_dim)


class SecondStage:
    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """u ~ N(0, I), z ~ N(f(u), gamma_z I) (Dai & Wipf Sec. 4, step 3). (n, D)"""
        self.vae.eval()
        gen = torch.Generator().manual_seed(seed)
        d = self.vae.cfg.latent_dim
        u = torch.randn(n, d, generator=gen)
        eps = torch.randn(n, d, generator=gen)
        device = next(self.vae.parameters()).device
        mean = self.vae.decode(u.to(device)).cpu()  # f(u): (n, D)
        # (1,) for Iso-I's one gamma_z; (1, n, 1) or (1, n, D) for a variance that depends on u
        std = (0.5 * self.vae.log_variance(u[None].to(device))).exp().cpu()
        return (mean[None] + std * eps[None])[0]

    def gamma(self) -> float:
        """The learned gamma_z (the mean decoder variance where it depends on u)."""
        with torch.no_grad():
            z = torch.zeros(1, 1, self.vae.cfg.latent_dim,
                            device=next(self.vae.parameters()).device)
            return float(self.vae.log_variance(z).exp().mean())


def fit_prior(latents: torch.Tensor, cfg: Config, seed: int = 0,
              redraw: Redraw | None = None) -> Density:
    return StandardNormal(latents.shape[-1])


def fit_gmm(latents: torch.Tensor, cfg: Config, seed: int = 0,
            redraw: Redraw | None = None) -> Density:
    n = latents.shape[0]
    if n < cfg.gmm_components:
        raise ValueError(f"a GMM of {cfg.gmm_components} components needs at least as many "
                         f"latents, got {n}; lower gmm_components")
    from sklearn.mixture import GaussianMixture
    gmm = GaussianMixture(cfg.gmm_components, covariance_type="full", random_state=seed,
                          reg_covar=1e-6)
    gmm.fit(latents.detach().cpu().double().numpy())
    return SklearnMixture(gmm)


def second_stage_config(cfg: Config) -> Config:
    """Dai & Wipf's second stage: a VAE with skip-connected MLP networks (3 x 1024 in their
    Table 1 setting) and a learned gamma_z (Iso-I, trainable), latent size = the first
    stage's."""
    return Config(latent_dim=cfg.latent_dim, arch="mlp_skip", hidden=cfg.second_stage_hidden,
                  depth=cfg.second_stage_depth, output="linear", posterior="diagonal",
                  sampling="reparam", regularizer="kl", decoder_variance="iso_i_trainable",
                  density="prior", lr=cfg.lr, batch_size=cfg.batch_size, name="second-stage",
                  # halved every 300 epochs (Dai & Wipf's demo.py, --lr-epochs2 300, l. 169)
                  lr_schedule="step", lr_step_epochs=300, lr_step_factor=0.5)


def fit_second_stage(latents: torch.Tensor, cfg: Config, seed: int = 0,
                     redraw: Redraw | None = None) -> Density:
    # seeded, without touching the caller's RNG; trained even when called under no_grad
    cuda = [latents.device] if latents.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        torch.manual_seed(seed)
        return _train_second_stage(latents, cfg, seed, redraw)


def _train_second_stage(latents: torch.Tensor, cfg: Config, seed: int,
                        redraw: Redraw | None) -> Density:
    from .autoencoder import GaussianAutoencoder  # the same composed model, on vectors

    stage2_cfg = second_stage_config(cfg)
    device = latents.device  # the trial's: 50 epochs of a 3 x 1024 MLP belong on its GPU
    vae = GaussianAutoencoder(stage2_cfg, (cfg.latent_dim,)).to(device)
    opt = vae.make_optimizer()
    gen = torch.Generator().manual_seed(seed)
    given = latents.detach().float()
    bs = min(stage2_cfg.batch_size, len(given))
    vae.train()
    for epoch in range(cfg.second_stage_epochs):
        set_lr(opt, vae.lr_at(epoch + 1, cfg.second_stage_epochs))
        # a fresh z ~ q(z|x) per image each epoch (without redraw: the given latents)
        data = (given if redraw is None or epoch == 0
                else redraw(epoch).detach().float().to(device))
        order = torch.randperm(len(data), generator=gen).to(device)
        for i in range(0, len(data), bs):
            loss = vae.loss(data[order[i:i + bs]])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return SecondStage(vae)


DENSITIES: dict[str, Callable[..., Density]] = {  # (latents, cfg, seed, redraw=None)
    "prior": fit_prior,
    "gmm": fit_gmm,
    "second_stage": fit_second_stage,
}


def draw_latents(model, images: torch.Tensor, seed: int = 0, batch_size: int = 512
                 ) -> torch.Tensor:
    """One latent per training image, drawn as in training (model.density_latents), for
    fitting an ex-post density; reproducible per seed. (N, D) on the model's device, where
    the second stage trains (a GMM takes them to the CPU itself)"""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # the latents drawn (random sigma points, draws) are reproducible per seed, and the
    # caller's RNG streams (CPU and the model's GPU) are left as they were
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        latents = torch.cat([model.density_latents(  # images: uint8 or float (models/images)
            float_images(images[i:i + batch_size], device))
            for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return latents


def fit_density(model, images: torch.Tensor, seed: int = 0, density: str | None = None,
                batch_size: int = 512) -> Density:
    """Fit the config's ex-post density (or `density`) on one latent per training image."""
    latents = draw_latents(model, images, seed, batch_size)
    return DENSITIES[density or model.cfg.density](
        latents, model.cfg, seed, redraw_latents(model, images, seed, batch_size))


@dataclass(frozen=True)
class DensitySet:
    """A density an evaluation samples its FIDs from (eval/fid_sample_<its name>) and a
    trial's pictures show: the density axis value that draws it, the config fields it is
    fitted with, and whether fitting it takes minutes at a full data set's size (--smoke
    leaves those out). The engine iterates DENSITY_SETS and never names one."""
    density: str  # a value of Config.density (DENSITIES)
    fields: dict = field(default_factory=dict)  # e.g. {"gmm_components": 10}
    costly: bool = False

    @property
    def fitted(self) -> bool:
        """False for the model's own prior: drawn as it is, not fitted to latents."""
        return self.density != PRIOR

    def fit(self, latents: torch.Tensor, cfg: Config, seed: int, redraw: Redraw) -> Density:
        """The density fitted to `latents` (N, D) under `cfg` with this set's fields."""
        return DENSITIES[self.density](latents, cfg.replace(**self.fields), seed, redraw)


PRIOR = "prior"  # the set (and density) of N(0, I), the model's own prior
# What `--eval fid` samples by default, by name: RAE's GMM-10 (UAE Sec. 5.1) and GMM-100
# (Takida Table 4), Dai & Wipf's second stage, and the prior
DENSITY_SETS = {PRIOR: DensitySet(PRIOR), "gmm10": DensitySet("gmm", {"gmm_components": 10}),
                "gmm100": DensitySet("gmm", {"gmm_components": 100}, costly=True),
                "second_stage": DensitySet("second_stage", costly=True)}


def redraw_latents(model, images: torch.Tensor, seed: int = 0, batch_size: int = 512) -> Redraw:
    """k -> the k-th independent draw of one latent per image (k = 0: draw_latents' own)."""
    # seed + k would give seed 1's first draw to seed 0's second, and torch's CPU generator
    # keeps only 32 bits of a seed: (seed, k) mixed into 32 bits by numpy's SeedSequence
    def redraw(k: int) -> torch.Tensor:
        mixed = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        return draw_latents(model, images, mixed, batch_size)
    return redraw
