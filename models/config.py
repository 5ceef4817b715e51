"""One frozen, validated configuration with a field per ablation axis.

Every model of the four papers is a `Config` value (see `presets.py`); the engine grids over
its fields. Invalid combinations are rejected in `__post_init__` with one line that names the
field, the bad value and a way to fix it; nothing is silently patched.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field

_STOCHASTIC_SAMPLINGS = ("reparam", "unscented", "unscented_rows", "unscented_all",
                         "unscented_mean")
_FIXED_POINT_SAMPLINGS = ("unscented_all", "mean")  # a fixed point set: num_samples=1
MEAN_SAMPLING = "mean"  # z = mu: the one sampling a point posterior has

# The field each axis validates, with its built-in values. Each name is also the key of the
# axis's dict of small functions or records in its module (posteriors.POSTERIORS,
# samplers.SAMPLERS, ...; tests/test_combinations.py checks they agree); they are listed here
# so that a config can be validated without importing torch. `models.register` adds a value to
# an axis (its function to the module's dict, its name here) without editing this file.
AXES: dict[str, tuple[str, ...]] = {
    "posterior": ("diagonal", "full", "full_bounded", "point"),
    "sampling": ("reparam", "unscented", "unscented_rows", "unscented_all", "unscented_mean",
                 "mean"),
    "regularizer": ("kl", "wasserstein", "wasserstein_unsquared", "l2", "l2_unsquared", "mmd",
                    "none"),
    "decoder_reg": ("none", "gradient_penalty", "eig_gradient_penalty",
                    "eig_gradient_norm_at_mean", "gradient_norm_at_mean", "spectral_norm_sum",
                    "spectral_norm_sum_power", "weight_decay"),
    "decoder_variance": ("mse", "sse", "fixed",
                         "iso_i_mle", "iso_d_mle", "diag_i_mle", "diag_d_mle",
                         "iso_i_trainable", "iso_d_trainable", "diag_i_trainable",
                         "diag_d_trainable", "diag_d_trainable_floor"),
    "codebook": ("none", "soft", "vq"),
    "density": ("prior", "gmm", "second_stage"),
    "arch": ("auto", "mlp", "mlp_skip", "conv28", "conv32", "conv64", "conv128"),
    "output": ("sigmoid", "linear"),
    "lr_schedule": ("constant", "step", "cosine", "plateau"),
}
_ADDED: dict[str, list[str]] = {axis: [] for axis in AXES}


def axis_values(axis: str) -> tuple[str, ...]:
    """Every value of config field `axis`: the built-in ones, then those registered."""
    return AXES[axis] + tuple(_ADDED[axis])


def add_axis_value(axis: str, name: str) -> None:
    """Allow `name` as a value of config field `axis` (models.register calls it)."""
    if axis not in AXES:
        _fail(f"{axis!r} is not an axis; axes: {', '.join(AXES)}")
    if name in axis_values(axis):
        _fail(f"{axis}={name!r} exists already; pick another name")
    _ADDED[axis].append(name)


def remove_axis_value(axis: str, name: str) -> None:
    """Undo add_axis_value (a built-in value cannot be removed)."""
    if name not in _ADDED.get(axis, ()):
        _fail(f"{axis}={name!r} was not registered")
    _ADDED[axis].remove(name)


class ConfigError(ValueError):
    """A configuration that cannot be built; the message is one line saying how to fix it."""


@dataclass(frozen=True)
class Config:
    """A Gaussian-autoencoder-family model as one value per ablation axis."""

    # --- architecture ---
    latent_dim: int = 16
    """Latent size D."""
    arch: str = "auto"
    """Encoder/decoder networks (models/networks.py); "auto" picks by image size."""
    hidden: int = 256
    """Width of the MLP networks ("mlp" and "mlp_skip" archs only)."""
    depth: int = 2
    """Number of hidden layers of the MLP networks ("mlp" and "mlp_skip" archs only)."""
    output: str = "sigmoid"
    """Decoder output: "sigmoid" for images in [0, 1], "linear" for unbounded data (latents)."""

    # --- posterior q(z|x) and how z is drawn from it ---
    posterior: str = "diagonal"
    """"diagonal" N(mu, diag(sigma^2)); "full" N(mu, L L^T), L lower-triangular (UAE Eq. 4);
    "full_bounded" the same with L_ij = tanh(r_ij) sigma_i sigma_j (the UAE authors' code);
    "point" z = mu."""
    sampling: str = "reparam"
    """"reparam" (k random draws, UAE Eq. 4); "unscented" (num_samples sigma points drawn
    uniformly per step, UAE Eq. 8); "unscented_rows" (the same along the rows of L, as the
    UAE authors' code has it); "unscented_all" (all 2D+1 points, each reconstructed, UT
    weights); "unscented_mean" (num_samples random points, decoded and averaged into one
    output before the loss, as the UAE authors' code reads Eq. 6); "mean" (z = mu)."""
    num_samples: int = 1
    """Random draws (reparam) or sigma points per input and step (unscented)."""
    kappa: float = 1e-3
    """Unscented-transform spread: points mu +- sqrt(kappa + D) L[:, i] (UAE Eq. 5); kappa > -D.
    1e-3 is the UAE authors' code's value."""

    # --- loss terms ---
    decoder_variance: str = "mse"
    """The reconstruction term: "mse" (||x - x_hat||^2 / d_x), "sse" (summed), "fixed" (Gaussian NLL at sigma_x2),
    Takida's Iso-I/Iso-D/Diag-I/Diag-D "by MLE" (Table 2, Appendix G) or "trainable"."""
    sigma_x2: float = 1.0
    """Decoder variance of decoder_variance="fixed"."""
    var_floor: float = 1e-6
    """What decoder_variance="diag_d_trainable_floor" adds to exp(log Sigma_x): its Sigma_x is
    never below it (Takida's 1e-6, the constant its MLEs add, Sec. 5.2 / G.7-G.17)."""
    mle_eps: float = 1e-6
    """What the Iso-D, Diag-I and Diag-D MLEs of Sigma_x add to the mean squared error
    (Takida G.7-G.17's 1e-6; Iso-I's G.4 has none). Diag-D by MLE depends on it alone."""
    regularizer: str = "kl"
    """Latent regularizer: "kl" (UAE Eq. 9), "wasserstein" (Eq. 10, 18-19), "l2" (1/2 ||z||^2,
    RAE), "mmd" (WAE-MMD, inverse multiquadric kernel), "none"; "wasserstein_unsquared" and
    "l2_unsquared", the unsquared norms of the UAE authors' code."""
    beta: float = 1.0
    """Weight of the latent regularizer."""
    decoder_reg: str = "none"
    """"gradient_penalty" (RAE-GP), "eig_gradient_penalty" (UAE Eq. 11),
    "eig_gradient_norm_at_mean" (the UAE authors' code: lambda_max capped at 100 times the
    unsquared ||d sum D(mu) / d mu||), "gradient_norm_at_mean" (the same without lambda_max:
    the code's "grad_norm", its RAE-GP), "spectral_norm_sum" (the sum of the decoder layers'
    spectral norms by SVD: what the code calls "weight_decay", its RAE-L2),
    "spectral_norm_sum_power" (the same sum by power iteration, one step per training step
    from a persistent vector per layer: RAE-L2-code's), "weight_decay" (RAE-L2,
    an optimizer parameter-group rule on the decoder), or "none"."""
    gamma: float = 0.0
    """Weight of the decoder regularizer (the decay coefficient for "weight_decay")."""
    codebook: str = "none"
    """Latent codebook: "soft" (MVU-AE Eq. 18, no substitution), "vq" (VQ-VAE, straight-through)."""
    codebook_size: int = 512
    """Number of codebook entries K."""
    commitment: float = 1.0
    """Weight of the commitment term ||sg[z_q] - E(x)||^2 (1 in MVU-AE Eq. 18, 0.25 in VQ-VAE)."""

    # --- ex-post density for sampling, fitted after training ---
    density: str = "gmm"
    """"prior" N(0, I); "gmm" (scikit-learn, full covariance); "second_stage" (Dai & Wipf)."""
    gmm_components: int = 10
    second_stage_hidden: int = 1024
    second_stage_depth: int = 3
    second_stage_epochs: int = 50

    # --- optimisation ---
    lr: float = 1e-3
    lr_schedule: str = "constant"
    """The learning rate per epoch (models/schedules.py): "constant"; "step", times
    lr_step_factor every lr_step_epochs epochs (Dai & Wipf: 0.5 every 150); "cosine", annealed
    from lr towards 0 over the trial's epochs; "plateau", times lr_plateau_factor after more than
    lr_plateau_patience epochs without a lower last-batch training loss (the UAE authors' code:
    0.5 and 5)."""
    lr_step_epochs: int = 150
    lr_step_factor: float = 0.5
    lr_plateau_factor: float = 0.5
    lr_plateau_patience: int = 5
    batch_size: int = 64

    # free-form label (e.g. the preset's name); the engine never branches on it
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for name in AXES:
            allowed, value = axis_values(name), getattr(self, name)
            if value not in allowed:
                _fail(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name, minimum in (("latent_dim", 1), ("num_samples", 1), ("hidden", 1), ("depth", 1),
                              ("gmm_components", 1), ("second_stage_hidden", 1),
                              ("second_stage_depth", 1), ("batch_size", 1),
                              ("codebook_size", 1), ("second_stage_epochs", 0),
                              ("lr_step_epochs", 1), ("lr_plateau_patience", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                _fail(f"{name}={value!r} must be an integer >= {minimum}")
        _check_floats(self)
        if self.batch_size < 2:
            _fail(f"batch_size={self.batch_size} must be >= 2: BatchNorm, the MMD and the "
                  "minibatch MLE of Sigma_x need at least two inputs per batch")
        for name in ("beta", "gamma", "commitment"):
            if not getattr(self, name) >= 0:  # also catches NaN
                _fail(f"{name}={getattr(self, name)} must be >= 0")
        if not self.sigma_x2 > 0:
            _fail(f"sigma_x2={self.sigma_x2} must be > 0 (it is a variance)")
        if not self.mle_eps > 0:
            _fail(f"mle_eps={self.mle_eps} must be > 0 (it keeps the MLE variance from 0)")
        if not self.var_floor > 0:
            _fail(f"var_floor={self.var_floor} must be > 0 (it keeps the trainable variance "
                  "from 0)")
        if not self.lr > 0:
            _fail(f"lr={self.lr} must be > 0")
        if not self.lr_step_factor > 0:
            _fail(f"lr_step_factor={self.lr_step_factor} must be > 0 (0.5 halves the rate)")
        if not 0 < self.lr_plateau_factor < 1:  # torch's ReduceLROnPlateau refuses >= 1
            _fail(f"lr_plateau_factor={self.lr_plateau_factor} must be in (0, 1) (0.5 halves "
                  "the rate at a plateau)")
        if not self.kappa > -self.latent_dim:
            _fail(f"kappa={self.kappa} must be > -latent_dim ({-self.latent_dim}) so that "
                  "sqrt(kappa + D) is real (UAE Eq. 5)")

        point = self.posterior == "point"
        if point and self.sampling in _STOCHASTIC_SAMPLINGS:
            _fail(f"sampling={self.sampling!r} needs a stochastic posterior, but "
                  "posterior='point'; use sampling='mean' or posterior='diagonal'/'full'")
        if point and self.regularizer in ("kl", "wasserstein", "wasserstein_unsquared"):
            _fail(f"regularizer={self.regularizer!r} compares a Gaussian posterior with "
                  "N(0, I) and is undefined for posterior='point'; use 'l2', 'mmd' or 'none'")
        if point and self.decoder_reg in ("eig_gradient_penalty", "eig_gradient_norm_at_mean"):
            _fail(f"decoder_reg={self.decoder_reg!r} weights by lambda_max(Sigma), which is 0 "
                  "for posterior='point'; use 'gradient_penalty'")
        if (self.sampling in ("unscented", "unscented_rows", "unscented_mean")
                and self.num_samples > 2 * self.latent_dim + 1):
            _fail(f"num_samples={self.num_samples} exceeds the {2 * self.latent_dim + 1} sigma "
                  f"points of a latent_dim={self.latent_dim} posterior; use sampling='unscented_all'")
        if self.sampling == "unscented_all" and self.kappa < 0:
            _fail(f"kappa={self.kappa} gives the centre sigma point a negative weight, which "
                  "sampling='unscented_all' cannot use as a loss weight; use kappa >= 0")
        if self.sampling in _FIXED_POINT_SAMPLINGS and self.num_samples != 1:
            _fail(f"num_samples={self.num_samples} has no meaning for sampling={self.sampling!r} "
                  "(it uses a fixed set of points); leave num_samples=1")
        if self.codebook == "vq" and not point:
            _fail("codebook='vq' substitutes the nearest code for z and needs posterior='point' "
                  "with sampling='mean'; use codebook='soft' for a stochastic posterior")

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (validated again)."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            guesses = [f"{u} -> {close[0]}" for u in unknown
                       if (close := difflib.get_close_matches(u, known, n=1))]
            _fail(f"unknown config field(s) {', '.join(unknown)}"
                  + (f" (did you mean {', '.join(guesses)}?)" if guesses else "")
                  + f"; known fields: {', '.join(known)}")
        return dataclasses.replace(self, **changes)

    def with_sampling(self, sampling: str) -> "Config":
        """This config with `sampling` in place of its own: the same posterior, loss terms and
        num_samples (equal sample budgets), except that the fixed point sets ("unscented_all",
        "mean") take num_samples=1, as validation requires. Invalid combinations raise
        ConfigError, as they would at build time."""
        changes: dict = {"sampling": sampling}
        if sampling in _FIXED_POINT_SAMPLINGS:
            changes["num_samples"] = 1
        return self.replace(**changes)

    def with_default_arch(self, arch: str) -> "Config":
        """This config with `arch` where it leaves the choice to the image size ("auto");
        a config that names its arch keeps it."""
        return self.replace(arch=arch) if self.arch == "auto" else self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls().replace(**d)


def _check_floats(cfg: Config) -> None:
    """Every float field a finite number. One check over all of them, so that a field added
    later is covered too: inf passes `lr > 0` and `beta >= 0`, and NaN fails them with a
    message that does not say what is wrong; either would only show as a diverged trial."""
    for f in dataclasses.fields(cfg):
        if f.type not in (float, "float"):  # "float": the annotations are strings here
            continue
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(f"{f.name}={value!r} must be a number, e.g. {f.name}={f.default}")
        if not math.isfinite(value):
            _fail(f"{f.name}={value} must be finite (not inf or nan), e.g. {f.name}={f.default}")


def _fail(message: str) -> None:
    raise ConfigError(message)
