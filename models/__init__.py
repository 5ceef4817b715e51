"""A library of Gaussian-VAE-family autoencoders in which every ablation axis is a swappable piece.

Public API:
    PRESETS                      name -> Config, every model row of the papers' tables
    Config, ConfigError          one frozen, validated value per ablation axis
    build(name_or_config, input_shape, **overrides) -> GaussianAutoencoder
    fit_density(model, train_images, seed) -> Density with .sample(n, seed)
    draw_latents(model, train_images, seed) -> (N, D) latents, as fit_density draws them
    redraw_latents(model, train_images, seed) -> k -> the k-th such draw (k = 0: draw_latents')
    DENSITIES                    name -> fit(latents, cfg, seed, redraw=None) -> Density
    set_lr(optimizer, lr)        every parameter group at lr (model.lr_at(epoch, epochs) gives it)
    Posterior, REGULARIZERS, SAMPLINGS, nearest_code, MLE_EPS, TRAINABLE_VARIANCE_SHAPES
                                 what the evaluation suite computes with (engine/metrics/)
"""
from __future__ import annotations

from .autoencoder import GaussianAutoencoder
from .codebooks import nearest_code
from .config import SAMPLINGS, Config, ConfigError
from .density import DENSITIES, draw_latents, fit_density, redraw_latents
from .schedules import set_lr
from .posteriors import Posterior
from .presets import PRESETS
from .regularizers import REGULARIZERS
from .variances import MLE_EPS, TRAINABLE_VARIANCE_SHAPES

__all__ = ["PRESETS", "Config", "ConfigError", "GaussianAutoencoder", "build", "resolve",
           "fit_density", "draw_latents", "redraw_latents", "set_lr", "DENSITIES", "Posterior", "REGULARIZERS",
           "SAMPLINGS", "nearest_code", "MLE_EPS", "TRAINABLE_VARIANCE_SHAPES"]


def resolve(name_or_config: str | Config | dict, **overrides) -> Config:
    """A Config from a preset name, a Config or a dict of fields, with fields overridden."""
    if isinstance(name_or_config, str):
        if name_or_config not in PRESETS:
            raise ConfigError(f"unknown preset {name_or_config!r}; known presets: "
                              f"{', '.join(PRESETS)}")
        cfg = PRESETS[name_or_config]
    elif isinstance(name_or_config, dict):
        cfg = Config.from_dict(name_or_config)
    elif isinstance(name_or_config, Config):
        cfg = name_or_config
    else:
        raise ConfigError(f"expected a preset name, a Config or a dict, got "
                          f"{type(name_or_config).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def build(name_or_config: str | Config | dict, input_shape: tuple[int, ...] = (1, 8, 8),
          **overrides) -> GaussianAutoencoder:
    """The model for a preset name or config, for inputs of shape `input_shape` (C, H, W).

    `overrides` replace config fields, e.g. build("UAE", (1, 28, 28), latent_dim=16, beta=0.5).
    """
    return GaussianAutoencoder(resolve(name_or_config, **overrides), tuple(input_shape))
