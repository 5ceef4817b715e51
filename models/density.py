"""Ex-post densities over the latent space, fitted after training, for drawing new samples.

- "prior": N(0, I), the VAE's own prior.
- "gmm": a full-covariance Gaussian mixture fitted with scikit-learn (RAE, Ghosh et al. 2020;
  UAE Sec. 5.1 uses 10 components; Takida Table 4 also 100).
- "second_stage": a second VAE on the latents with its own learned gamma (Dai & Wipf Sec. 4):
  the same composed `GaussianAutoencoder` with MLP networks on D-dim vectors; z is drawn as
  u ~ N(0, I), z = decoder mean of u.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from .config import Config


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


class SecondStage:
    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        self.vae.eval()
        u = torch.randn(n, self.vae.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.vae.decode(u.to(next(self.vae.parameters()).device)).cpu()


def fit_prior(latents: torch.Tensor, cfg: Config, seed: int = 0) -> Density:
    return StandardNormal(latents.shape[-1])


def fit_gmm(latents: torch.Tensor, cfg: Config, seed: int = 0) -> Density:
    n = latents.shape[0]
    if n < cfg.gmm_components:
        raise ValueError(f"a GMM of {cfg.gmm_components} components needs at least as many "
                         f"latents, got {n}; lower gmm_components")
    gmm = GaussianMixture(cfg.gmm_components, covariance_type="full", random_state=seed,
                          reg_covar=1e-6)
    gmm.fit(latents.detach().cpu().double().numpy())
    return SklearnMixture(gmm)


def second_stage_config(cfg: Config) -> Config:
    """Dai & Wipf's second stage: a VAE with MLP networks (3 x 1024 in their Table 1 setting)
    and a learned gamma_z (Iso-I, trainable), latent size = the first stage's."""
    return Config(latent_dim=cfg.latent_dim, arch="mlp", hidden=cfg.second_stage_hidden,
                  depth=cfg.second_stage_depth, output="linear", posterior="diagonal",
                  sampling="reparam", regularizer="kl", decoder_variance="iso_i_trainable",
                  density="prior", lr=cfg.lr, batch_size=cfg.batch_size, name="second-stage")


def fit_second_stage(latents: torch.Tensor, cfg: Config, seed: int = 0) -> Density:
    # seeded, without touching the caller's RNG; trained even when called under no_grad
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        return _train_second_stage(latents, cfg, seed)


def _train_second_stage(latents: torch.Tensor, cfg: Config, seed: int) -> Density:
    from .autoencoder import GaussianAutoencoder  # the same composed model, on vectors

    stage2_cfg = second_stage_config(cfg)
    vae = GaussianAutoencoder(stage2_cfg, (cfg.latent_dim,))
    opt = vae.make_optimizer()
    data = latents.detach().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    bs = min(stage2_cfg.batch_size, len(data))
    vae.train()
    for _ in range(cfg.second_stage_epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), bs):
            loss = vae.loss(data[order[i:i + bs]])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return SecondStage(vae)


DENSITIES: dict[str, Callable[[torch.Tensor, Config, int], Density]] = {
    "prior": fit_prior,
    "gmm": fit_gmm,
    "second_stage": fit_second_stage,
}


def draw_latents(model, images: torch.Tensor, seed: int = 0, batch_size: int = 512
                 ) -> torch.Tensor:
    """One latent per training image, drawn as in training (model.density_latents), for
    fitting an ex-post density; reproducible per seed. (N, D) on the CPU"""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # the latents drawn (random sigma points, draws) are reproducible per seed, and the
    # caller's RNG streams (CPU and the model's GPU) are left as they were
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        latents = torch.cat([model.density_latents(images[i:i + batch_size].to(device)).cpu()
                             for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return latents


def fit_density(model, images: torch.Tensor, seed: int = 0, density: str | None = None,
                batch_size: int = 512) -> Density:
    """Fit the config's ex-post density (or `density`) on one latent per training image."""
    latents = draw_latents(model, images, seed, batch_size)
    return DENSITIES[density or model.cfg.density](latents, model.cfg, seed)
