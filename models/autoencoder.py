"""The one Gaussian autoencoder whose loss is composed from the axes of `Config`.

    loss = recon + beta * latent_reg + gamma * decoder_reg + codebook + commitment_w * commitment

(UAE Eq. 7; Takida Eq. 7a/10; MVU-AE Eq. 18.) Each term comes from the dict of its axis; this
file only wires them together. Encoders and decoders are injected from models/networks.py.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .codebooks import CODEBOOKS, nearest_code
from .config import Config
from .decoder_regs import DECODER_PENALTIES
from .networks import auto_arch, build_decoder, build_encoder
from .posteriors import POSTERIORS, Posterior
from .regularizers import REGULARIZERS
from .samplers import SAMPLERS, Samples
from .schedules import lr_at
from .variances import CONSTANT, DECODER_VARIANCES

# where torch's fused Adam runs and this project has tested it (torch lists more devices)
_FUSED_DEVICES = ("cpu", "cuda")

# --precision: the dtype the encoder and decoder networks compute in (autocast); None: fp32
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainableLogVariance(nn.Module):
    """log Sigma_x as trainable parameters (Takida Table 4, "trainable Sigma_x").

    Independent of x: one free parameter (Iso-I, Dai & Wipf's log gamma, initialised at 0) or
    one per pixel (Diag-I). Dependent on x: a linear head on the decoded latent z, giving one
    value (Iso-D) or one per pixel (Diag-D) per input.
    """

    def __init__(self, dependence: str, shape: str, x_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.x_shape = x_shape
        self.out_shape = (1,) * len(x_shape) if shape == "isotropic" else x_shape
        numel = int(torch.tensor(self.out_shape).prod())
        if dependence == "independent":
            self.log_var = nn.Parameter(torch.zeros(self.out_shape))
            self.head = None
        else:
            self.head = nn.Linear(latent_dim, numel)
            nn.init.zeros_(self.head.weight)  # start at Sigma_x = I, like the independent ones
            nn.init.zeros_(self.head.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (S, B, D)
        if self.head is None:
            return self.log_var  # broadcasts against (S, B, *X)
        return self.head(z).view(*z.shape[:-1], *self.out_shape)  # (S, B, *out_shape)


class GaussianAutoencoder(nn.Module):
    def __init__(self, cfg: Config, input_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.input_shape = tuple(input_shape)
        arch = auto_arch(self.input_shape) if cfg.arch == "auto" else cfg.arch
        self.arch = arch
        head = POSTERIORS[cfg.posterior]
        self._from_params = head.from_params
        self._has_density = head.density
        self._variance = DECODER_VARIANCES[cfg.decoder_variance]
        self._codebook = CODEBOOKS[cfg.codebook]
        self.encoder = build_encoder(arch, self.input_shape, head.num_params(cfg.latent_dim),
                                     hidden=cfg.hidden, depth=cfg.depth)
        self.decoder = build_decoder(arch, self.input_shape, cfg.latent_dim, output=cfg.output,
                                     hidden=cfg.hidden, depth=cfg.depth)
        penalty = DECODER_PENALTIES[cfg.decoder_reg]
        if getattr(penalty, "prepare", None) is not None:  # e.g. power iteration's vectors
            penalty.prepare(self.decoder)
        trainable = self._variance.trainable
        self.log_variance = (TrainableLogVariance(*trainable, self.input_shape, cfg.latent_dim)
                             if trainable is not None else None)
        if cfg.codebook != "none":
            k = cfg.codebook_size
            # VQ-VAE's initialisation, uniform(-1/K, 1/K)
            self.codebook = nn.Parameter(torch.empty(k, cfg.latent_dim).uniform_(-1 / k, 1 / k))
        else:
            self.codebook = None
        self._compute_dtype: torch.dtype | None = None  # compute_in() sets it
        self._image_format = torch.contiguous_format  # place() sets it

    # --- the public API ---
    def posterior(self, x: torch.Tensor) -> Posterior:
        return self._from_params(self._network(self.encoder, x), self.cfg.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean (B, D) and lower-triangular covariance factor L (B, D, D)."""
        post = self.posterior(x)
        return post.mean, post.scale_tril

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder mean for latents of shape (..., D) -> (..., *input_shape)."""
        lead = z.shape[:-1]
        out = self._network(self.decoder, z.reshape(-1, z.shape[-1]))
        return out.view(*lead, *self.input_shape)

    @contextlib.contextmanager
    def compute_in(self, precision: str) -> Iterator[None]:
        """Within it, the encoder and decoder networks run under autocast in `precision`
        ("fp32", "bf16", "fp16"; PRECISIONS) and return float32. Everything after them stays
        float32: the posterior's mean and covariance factor, the sampling (sigma points), the
        codebook, the latent regularizers (KL, Wasserstein: Cholesky factors, log-determinants),
        the decoder variances and their minibatch MLEs, the reconstruction likelihood and the
        eigenvalues of the decoder penalties, all of which bf16's 8-bit mantissa would move
        more than the networks' own rounding (tests/test_precision.py states by how much)."""
        before, self._compute_dtype = self._compute_dtype, PRECISIONS[precision]
        try:
            yield
        finally:
            self._compute_dtype = before

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The layout this model's convolutions run fastest in on `device`: channels_last (NHWC)
        for a net with convolutions on a CUDA device, whose cuDNN kernels (tensor cores under
        bf16/fp16) take NHWC and would otherwise transpose every input and output; elsewhere
        (the CPU, MLPs) the default layout."""
        convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.modules())
        if torch.device(device).type == "cuda" and convolutional:
            return torch.channels_last
        return torch.contiguous_format

    def place(self, device: torch.device, memory_format: torch.memory_format | None = None
              ) -> "GaussianAutoencoder":
        """The model on `device` in `memory_format` (default: memory_format(device)); the
        images it is given are laid out alike on the way in (_network). A layout changes
        strides, not values."""
        self._image_format = memory_format or self.memory_format(device)
        return self.to(device, memory_format=self._image_format)

    def _network(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and self._image_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self._image_format)  # (B, C, H, W) as NHWC
        if self._compute_dtype is None:
            return net(x)
        with torch.autocast(x.device.type, dtype=self._compute_dtype):
            out = net(x)
        return out.float()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction D(mu(x)) (through the codebook where there is one)."""
        post = self.posterior(x)
        z = post.mean[None]
        if self.codebook is not None:
            z, _ = self._codebook(post.mean, z, self.codebook)
        return self.decode(z)[0]

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """The latents the decoder would see for z (..., D): the nearest codes where the
        codebook substitutes them (VQ, MVU-AE Eq. 16), else z itself."""
        return nearest_code(z, self.codebook) if self._codebook.substitutes else z

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): the decoder mean of latents drawn from a prior or density, through the
        codebook where the decoder only ever sees codes. (..., D) -> (..., *input_shape)"""
        return self.decode(self.quantize(z))

    # --- what evaluation asks of the model (engine/metrics never reads the config's names) ---
    @property
    def deterministic(self) -> bool:
        """q(z|x) is a point mass (L = 0): no density, no sampling noise."""
        return not self._has_density

    @property
    def likelihood_unavailable(self) -> str | None:
        """Why the model defines no likelihood p(x) = E_p(z) p(x | z) to evaluate, in one line,
        or None when it has one."""
        cfg = self.cfg
        if self._variance.source is None:
            return (f"NLL needs a decoder likelihood; decoder_variance={cfg.decoder_variance!r} "
                    "has none (use fixed, *_mle or *_trainable)")
        if self._codebook.substitutes:
            return (f"NLL needs a continuous latent under the N(0, I) prior; codebook="
                    f"{cfg.codebook!r} decodes only codebook entries (a discrete latent)")
        if not self._has_density:
            return (f"NLL by importance weighting needs q(z|x) with a density; posterior="
                    f"{cfg.posterior!r} has none (use 'diagonal' or 'full')")
        return None

    @property
    def has_likelihood(self) -> bool:
        return self.likelihood_unavailable is None

    @property
    def variance_source(self) -> str | None:
        """Where evaluation takes Sigma_x from (models.variances: CONSTANT, DATA, INPUT,
        LATENT), None for a model without a decoder variance (a plain squared error)."""
        return self._variance.source

    def estimate_variance(self, err2: torch.Tensor | None) -> torch.Tensor:
        """Sigma_x from mean squared errors: err2 (1, *X) pooled over the training set and q for
        a DATA source, (B, *X) per input over q for INPUT, None for CONSTANT."""
        if self._variance.estimate is None:
            raise ValueError(f"decoder_variance={self.cfg.decoder_variance!r} has no variance "
                             f"estimate (its source is {self.variance_source})")
        return self._variance.estimate(err2, self.cfg)

    def decoder_log_variance(self, z: torch.Tensor) -> torch.Tensor:
        """A LATENT source's log Sigma_x(z), as training uses it (with the variance's floor,
        where it has one): (S, B, *X) or broadcastable to it."""
        if self.log_variance is None:
            raise ValueError(f"decoder_variance={self.cfg.decoder_variance!r} has no trainable "
                             "log Sigma_x")
        return self._variance.log_variance(self.log_variance(z), self.cfg)

    def decoder_gamma(self) -> float | None:
        """Dai & Wipf's gamma: the one decoder variance of every input and pixel where it is a
        constant or a free parameter of the model (their gamma = 1 baseline, their learned
        gamma), None where there is no single one (per-pixel or input-dependent variances,
        minibatch MLEs, plain squared errors)."""
        if self._variance.source == CONSTANT:
            var = self.estimate_variance(None)
        elif self.log_variance is not None and self.log_variance.head is None:
            var = torch.exp(self._variance.log_variance(self.log_variance.log_var.detach(),
                                                        self.cfg))
        else:
            return None
        return float(var.reshape(())) if var.numel() == 1 else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same as `loss(x)`: DistributedDataParallel synchronises gradients only for
        what goes through forward(), so a DDP-wrapped model is called as model(x)."""
        return self.loss(x)

    def loss(self, x: torch.Tensor, sampling: str | None = None) -> dict[str, torch.Tensor]:
        """The total under "loss" and every term by name (all 0-dim tensors).

        The terms are unweighted: "recon", "latent_reg", "decoder_reg", "codebook",
        "commitment" (those the config uses). Diagnostics that are not part of the loss:
        "mse" (mean squared error per pixel of the decoded latents) and "sigma_x2" (the mean
        decoder variance used by the reconstruction term, where it has one).

        `sampling`, where given, draws z with that value of the sampling axis in place of
        cfg.sampling (`Config.with_sampling`: the same posterior, terms and sample budget),
        so that estimators can be compared on one trained model (UAE Sec. 4.2, Fig. 1c);
        the model and its config are left as they are. An invalid combination raises
        ConfigError.
        """
        cfg = self.cfg if sampling is None else self.cfg.with_sampling(sampling)
        post = self.posterior(x)
        samples = SAMPLERS[cfg.sampling](post, cfg)
        z, code_terms = self._codebook(post.mean, samples.z, self.codebook)
        x_hat = self.decode(z)  # (S, B, *X)
        terms: dict[str, torch.Tensor] = {}

        penalty = DECODER_PENALTIES[cfg.decoder_reg]
        if penalty is not None:  # (B,) or 0-dim
            terms["decoder_reg"] = penalty(self.decoder, self.decode, z, x_hat, post,
                                           samples.weights).mean()

        weights = samples.weights
        if samples.combine:  # decoded outputs averaged into one before the loss
            w = weights.view(-1, *([1] * (x_hat.dim() - 1)))
            x_hat, z = (w * x_hat).sum(0, keepdim=True), (weights[:, None, None] * z).sum(0, True)
            weights = weights.new_ones(1)
        log_var = self.log_variance(z) if self.log_variance is not None else None
        recon, var = self._variance(x, x_hat, weights, log_var, cfg)

        terms["recon"] = recon.mean()
        terms["latent_reg"] = REGULARIZERS[cfg.regularizer](post, samples).mean()
        terms.update({k: v.mean() for k, v in code_terms.items()})
        total = terms["recon"] + cfg.beta * terms["latent_reg"]
        if "decoder_reg" in terms:
            total = total + cfg.gamma * terms["decoder_reg"]
        if code_terms:
            total = total + terms["codebook"] + cfg.commitment * terms["commitment"]

        with torch.no_grad():
            err2 = (x - x_hat).pow(2).flatten(2).mean(-1)  # (S, B)
            terms["mse"] = (weights[:, None] * err2).sum(0).mean()
            if var is not None:
                terms["sigma_x2"] = var.mean()
        return {"loss": total, **terms}

    # --- training helpers ---
    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups: weight decay gamma on the decoder's parameters only
        for decoder_reg="weight_decay" (RAE-L2), none elsewhere."""
        decay = self.cfg.gamma if self.cfg.decoder_reg == "weight_decay" else 0.0
        decoder = list(self.decoder.parameters())
        ids = {id(p) for p in decoder}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "weight_decay": 0.0},
                {"params": decoder, "weight_decay": decay}]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over param_groups(), fused (one kernel for all parameters) where the
        parameters' device has torch's fused kernel: it is faster, and it can skip a step on
        the device (its found-inf input), which lets training check for a non-finite loss
        without a host sync a batch (engine/run/trial.py)."""
        groups = self.param_groups()
        fused = all(p.is_floating_point() and p.device.type in _FUSED_DEVICES
                    for g in groups for p in g["params"])
        return torch.optim.Adam(groups, lr=self.cfg.lr, fused=fused or None)

    def lr_at(self, epoch: int, epochs: int, history: Sequence[float] = ()) -> float:
        """The learning rate of epoch `epoch` (1-based) of `epochs` (cfg.lr_schedule), after the
        monitored losses `history` of the epochs before it (models/schedules.py)."""
        return lr_at(self.cfg, epoch, epochs, history)

    @torch.no_grad()
    def density_latents(self, x: torch.Tensor) -> torch.Tensor:
        """One latent per input drawn as in training, for fitting an ex-post density: a random
        draw, a random sigma point (UAE Sec. 5.1) or the mean. (B, D)"""
        samples: Samples = SAMPLERS[self.cfg.sampling](self.posterior(x), self.cfg)
        pick = torch.randint(samples.z.shape[0], (samples.z.shape[1],), device=x.device)
        z = samples.z[pick, torch.arange(samples.z.shape[1], device=x.device)]
        return self.quantize(z)  # the decoder of a VQ model only ever sees codes
