"""A library of Gaussian-VAE-family autoencoders in which every ablation axis is a swappable piece.

Public API:
    PRESETS                      name -> Config, every model row of the papers' tables
    Config, ConfigError          one frozen, validated value per ablation axis
    build(name_or_config, input_shape, **overrides) -> GaussianAutoencoder
    fit_density(model, train_images, seed) -> Density with .sample(n, seed)
    draw_latents(model, train_images, seed) -> (N, D) latents, as fit_density draws them
    redraw_latents(model, train_images, seed) -> k -> the k-th such draw (k = 0: draw_latents')
    density_state(density) -> tensors; state_density(state, cfg) -> the same Density again
    float_images(x, device, dtype) a batch of uint8 codes (k / 255) or floats as floats in
                                 [0, 1] on the device: how data sets held as uint8 are read
    DENSITIES                    name -> fit(latents, cfg, seed, redraw=None) -> Density
    PRECISIONS                   --precision name -> the dtype model.compute_in(name) runs the
                                 encoder and decoder networks in (None: fp32)
    set_lr(optimizer, lr)        every parameter group at lr (model.lr_at(epoch, epochs) gives it)
    Posterior, REGULARIZERS, nearest_code, MLE_EPS, UAE_GRADIENT_SAMPLINGS,
    kl_to_standard_normal, MEAN_SAMPLING
                                 what the evaluation suite computes with (engine/eval/metrics/)
    CONSTANT, DATA, INPUT, LATENT where evaluation takes a model's Sigma_x from
                                 (model.variance_source)
    axis_values(field)           the values config field `field` takes (built-in, then registered)
    register(axis, name, value), unregister(axis, name)
                                 add a value to an axis without editing models/ (e.g. a test's
                                 toy decoder variance, a DecoderVariance or Codebook record)
    DecoderVariance, Codebook, PosteriorHead   the records of those axes
"""
from __future__ import annotations

from . import config as _config
from .autoencoder import PRECISIONS, GaussianAutoencoder
from .codebooks import CODEBOOKS, Codebook, nearest_code
from .config import MEAN_SAMPLING, Config, ConfigError, axis_values
from .decoder_regs import DECODER_PENALTIES
from .density import (DENSITIES, DENSITY_SETS, PRIOR, DensitySet, density_state,
                      draw_latents, fit_density, redraw_latents, state_density)
from .images import float_images
from .schedules import needs_total_epochs, set_lr
from .posteriors import POSTERIORS, Posterior, PosteriorHead
from .presets import PRESETS
from .regularizers import REGULARIZERS, kl_to_standard_normal
from .samplers import SAMPLERS, UAE_GRADIENT_SAMPLINGS
from .variances import (CONSTANT, DATA, DECODER_VARIANCES, INPUT, LATENT, MLE_EPS,
                        DecoderVariance)

__all__ = ["PRESETS", "PRECISIONS", "Config", "ConfigError", "GaussianAutoencoder", "build",
           "resolve", "fit_density", "draw_latents", "redraw_latents", "float_images", "set_lr",
           "DENSITIES", "DENSITY_SETS", "DensitySet", "PRIOR", "density_state", "state_density",
           "Posterior", "REGULARIZERS", "axis_values", "nearest_code", "MLE_EPS",
           "UAE_GRADIENT_SAMPLINGS",
           "kl_to_standard_normal", "MEAN_SAMPLING",
           "CONSTANT", "DATA", "INPUT", "LATENT", "register", "unregister", "DecoderVariance",
           "Codebook", "PosteriorHead"]

# The dict of small functions (or records) of each axis, by config field.
_REGISTRIES: dict[str, dict] = {
    "posterior": POSTERIORS, "sampling": SAMPLERS, "regularizer": REGULARIZERS,
    "decoder_reg": DECODER_PENALTIES, "decoder_variance": DECODER_VARIANCES,
    "codebook": CODEBOOKS, "density": DENSITIES,
}


def register(axis: str, name: str, value) -> None:
    """Add `name` to config field `axis` with `value` its piece (the same type as the
    axis's dict holds: a DecoderVariance, a Codebook, a PosteriorHead, a function).

    A value added here exists in this process only: a value meant for Ray trials belongs in
    its axis's module, where every worker imports it."""
    if axis not in _REGISTRIES:
        raise ConfigError(f"{axis!r} is not an axis with a registry; axes: "
                          f"{', '.join(_REGISTRIES)}")
    _config.add_axis_value(axis, name)
    _REGISTRIES[axis][name] = value


def unregister(axis: str, name: str) -> None:
    """Remove a value `register` added."""
    _config.remove_axis_value(axis, name)
    del _REGISTRIES[axis][name]


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
