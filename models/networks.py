"""Encoder and decoder networks that the autoencoder is built from.

The autoencoder asks for an encoder, x of shape (B, *input_shape) -> (B, out_features) raw
posterior parameters (no activation at the end: the posterior module decides how they become a
mean, a log-variance or a Cholesky factor), and a decoder, z of shape (B, latent_dim) ->
(B, *output_shape). Every architecture is one small builder function in `_ENCODERS` /
`_DECODERS`, keyed by the names in `ARCHS`:

* "mlp"     any shape, flattened. Widths `hidden`, `depth` hidden layers. With hidden=1024,
            depth=3 and output="linear" it is the second-stage VAE of Dai & Wipf (2019,
            Appendix D: "three 1024-dimensional hidden layers"), which Takida et al. reuse.
* "mlp_skip" "mlp" whose output layer sees its input beside the last hidden layer: Dai &
            Wipf's second stage as their code builds it (daib13/TwoStageVAE,
            network/two_stage_vae_model.py l. 81 and 93, `tf.concat([self.z, t], -1)`).
* "conv28"  MNIST 28x28: Takida et al., Appendix I.1 (the InfoGAN network of [36] with ReLU).
* "conv32"  CIFAR-10 32x32: a narrower version of the RAE CIFAR network (Ghosh et al. 2020,
            64-128-256 channels instead of 128-256-512-1024), chosen so that it trains on a CPU.
* "conv64"  CelebA 64x64: Takida et al., Appendix I.2.
* "conv128" CelebA-HQ 128x128: Takida et al., Appendix I.3.

The convolutional archs have a fixed image size; asking for one with another size is a
ValueError with one line that says which archs fit. `arch="auto"` resolves through
`auto_arch`. `hidden` and `depth` only shape "mlp": the convolutional widths are the papers'.
Images are (C, H, W); a 2-D shape (H, W) is treated as one channel.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

ARCHS: tuple[str, ...] = ("mlp", "mlp_skip", "conv28", "conv32", "conv64", "conv128")
OUTPUTS: tuple[str, ...] = ("sigmoid", "linear")

# Image side length of each convolutional arch; auto_arch is the inverse of this table.
_IMAGE_SIZE = {"conv28": 28, "conv32": 32, "conv64": 64, "conv128": 128}


class Reshape(nn.Module):
    """(B, ...) -> (B, *shape); the batch dimension is kept as is."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


# ----------------------------------------------------------------------------------------------
# Layer helpers. Padding is chosen so that every stride-2 layer exactly halves / doubles the
# side length, which is what the papers' size annotations require:
#   Conv k5 s2 p2:          out = floor((n - 1) / 2) + 1 = n / 2 for even n
#   ConvT k5 s2 p2 op1:     out = 2(n - 1) - 4 + 5 + 1   = 2n
#   Conv k4 s2 p1:          out = (n - 2) / 2 + 1        = n / 2
#   ConvT k4 s2 p1:         out = 2(n - 1) - 2 + 4       = 2n
# A layer followed by BatchNorm has no bias: BN subtracts the batch mean, so a bias would be
# a redundant parameter whose gradient is exactly zero in training mode.
# ----------------------------------------------------------------------------------------------

def _conv(c_in: int, c_out: int, bn: bool, k: int = 5) -> list[nn.Module]:
    """k x k stride-2 convolution (halves H and W: padding (k-1)//2), [BN], ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=2, padding=(k - 1) // 2, bias=not bn)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    return layers


def _convt(c_in: int, c_out: int, bn: bool, k: int = 5) -> list[nn.Module]:
    """k x k stride-2 transposed convolution (doubles H and W: padding (k-1)//2, output
    padding k % 2), [BN], ReLU."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(
        c_in, c_out, k, stride=2, padding=(k - 1) // 2, output_padding=k % 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    return layers


def _output_activation(output: str) -> nn.Module:
    # "sigmoid": images in [0, 1]; "linear": unbounded data such as the latents that the
    # second-stage VAE models.
    return nn.Sigmoid() if output == "sigmoid" else nn.Identity()


def _mlp(d_in: int, d_out: int, hidden: int, depth: int) -> list[nn.Module]:
    """`depth` hidden Linear+ReLU layers of width `hidden`, then a Linear to d_out."""
    layers: list[nn.Module] = []
    width = d_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, d_out))
    return layers


class SkipMLP(nn.Module):
    """`_mlp`, with the input concatenated to the last hidden layer before the output layer
    (Dai & Wipf's second stage). (B, d_in) -> (B, d_out)"""

    def __init__(self, d_in: int, d_out: int, hidden: int, depth: int) -> None:
        super().__init__()
        body = _mlp(d_in, d_out, hidden, depth)[:-1]  # the hidden Linear+ReLU layers
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(d_in + (hidden if depth else d_in), d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x) if len(self.body) else x  # (B, hidden), or x itself at depth 0
        return self.out(torch.cat([x, h], dim=-1))  # (B, d_in + hidden) -> (B, d_out)


# ----------------------------------------------------------------------------------------------
# Encoders: (C, H, W) or any shape for "mlp" -> out_features raw posterior parameters.
# ----------------------------------------------------------------------------------------------

def _encoder_mlp(shape: tuple[int, ...], out: int, hidden: int, depth: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), *_mlp(math.prod(shape), out, hidden, depth))


def _encoder_mlp_skip(shape: tuple[int, ...], out: int, hidden: int, depth: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), SkipMLP(math.prod(shape), out, hidden, depth))


def _encoder_conv28(shape: tuple[int, ...], out: int, hidden: int, depth: int) -> nn.Module:
    # Takida et al., Appendix I.1: no BN in the conv layers, BN only after FC_1024.
    c = shape[0]
    return nn.Sequential(
        *_conv(c, 64, bn=False),                      # (B, 64, 14, 14)
        *_conv(64, 128, bn=False),                    # (B, 128, 7, 7)
        nn.Flatten(),                                  # (B, 6272)
        nn.Linear(128 * 7 * 7, 1024, bias=False),
        nn.BatchNorm1d(1024),
        nn.ReLU(),                                     # (B, 1024)
        nn.Linear(1024, out),                          # (B, out)
    )


def _encoder_conv32(shape: tuple[int, ...], out: int, hidden: int, depth: int) -> nn.Module:
    """A narrower version of the RAE CIFAR-10 encoder (Ghosh et al. 2020): the same 4x4
    stride-2 conv + BN + ReLU blocks, but 64-128-256 channels instead of 128-256-512-1024,
    chosen so that it trains on a CPU (CIFAR-10 and the 32x32 embedded patches run on two
    cores). Three halvings take 32x32 to 4x4."""
    c = shape[0]
    return nn.Sequential(
        *_conv(c, 64, bn=True, k=4),                   # (B, 64, 16, 16)
        *_conv(64, 128, bn=True, k=4),                 # (B, 128, 8, 8)
        *_conv(128, 256, bn=True, k=4),                # (B, 256, 4, 4)
        nn.Flatten(),                                  # (B, 4096)
        nn.Linear(256 * 4 * 4, out),                   # (B, out)
    )


def _encoder_celeba(side: int) -> Callable[..., nn.Module]:
    """Takida et al., Appendix I.2 (64x64) and I.3 (128x128): four 5x5 stride-2 convs with
    128-256-512-1024 channels, BN on all but the first, then one FC. The 128x128 version is the
    same network on a larger input, so its feature maps are twice as large."""

    def build(shape: tuple[int, ...], out: int, hidden: int, depth: int) -> nn.Module:
        c, s = shape[0], side // 16                    # s = 4 (64x64) or 8 (128x128)
        return nn.Sequential(
            *_conv(c, 128, bn=False),                 # (B, 128, side/2, side/2)
            *_conv(128, 256, bn=True),                # (B, 256, side/4, side/4)
            *_conv(256, 512, bn=True),                # (B, 512, side/8, side/8)
            *_conv(512, 1024, bn=True),               # (B, 1024, s, s)
            nn.Flatten(),                              # (B, 1024 * s * s)
            nn.Linear(1024 * s * s, out),              # (B, out)
        )

    return build


# ----------------------------------------------------------------------------------------------
# Decoders: latent_dim -> (C, H, W) or any shape for "mlp", then the output activation.
# ----------------------------------------------------------------------------------------------

def _decoder_mlp(shape: tuple[int, ...], latent: int, output: str, hidden: int,
                 depth: int) -> nn.Module:
    return nn.Sequential(
        *_mlp(latent, math.prod(shape), hidden, depth),
        _output_activation(output),
        Reshape(*shape),
    )


def _decoder_mlp_skip(shape: tuple[int, ...], latent: int, output: str, hidden: int,
                      depth: int) -> nn.Module:
    return nn.Sequential(SkipMLP(latent, math.prod(shape), hidden, depth),
                         _output_activation(output), Reshape(*shape))


def _decoder_conv28(shape: tuple[int, ...], latent: int, output: str, hidden: int,
                    depth: int) -> nn.Module:
    # Takida et al., Appendix I.1. The paper exempts "the last" ConvT from the 5x5 stride-2
    # rule, but its sizes (64, 14, 14) -> (1, 28, 28) need an upsampling layer, so the last
    # ConvT is 5x5 stride 2 too (as in the InfoGAN generator it is taken from).
    c = shape[0]
    return nn.Sequential(
        nn.Linear(latent, 1024, bias=False),
        nn.BatchNorm1d(1024),
        nn.ReLU(),                                     # (B, 1024)
        nn.Linear(1024, 128 * 7 * 7, bias=False),
        nn.BatchNorm1d(128 * 7 * 7),
        nn.ReLU(),
        Reshape(128, 7, 7),                            # (B, 128, 7, 7)
        *_convt(128, 64, bn=True),                    # (B, 64, 14, 14)
        nn.ConvTranspose2d(64, c, 5, stride=2, padding=2, output_padding=1),  # (B, C, 28, 28)
        _output_activation(output),
    )


def _decoder_conv32(shape: tuple[int, ...], latent: int, output: str, hidden: int,
                    depth: int) -> nn.Module:
    """Mirror of _encoder_conv32: the RAE CIFAR-10 decoder narrowed to 256-128-64 channels so
    that it trains on a CPU."""
    c = shape[0]
    return nn.Sequential(
        nn.Linear(latent, 256 * 4 * 4, bias=False),
        nn.BatchNorm1d(256 * 4 * 4),
        nn.ReLU(),
        Reshape(256, 4, 4),                            # (B, 256, 4, 4)
        *_convt(256, 128, bn=True, k=4),               # (B, 128, 8, 8)
        *_convt(128, 64, bn=True, k=4),                # (B, 64, 16, 16)
        nn.ConvTranspose2d(64, c, 4, stride=2, padding=1),  # (B, C, 32, 32)
        _output_activation(output),
    )


def _decoder_celeba(side: int) -> Callable[..., nn.Module]:
    """Takida et al., Appendix I.2 (64x64) and I.3 (128x128): FC to (1024, side/8, side/8),
    three 5x5 stride-2 ConvTs (512-256-128, BN on all but the first), then a last ConvT to C
    channels. The paper lists that last layer at full resolution and exempts it from the
    stride-2 rule, so it is a 5x5 stride-1 'same' ConvT. As in the paper there is no
    nonlinearity between the FC and the first ConvT."""

    def build(shape: tuple[int, ...], latent: int, output: str, hidden: int,
              depth: int) -> nn.Module:
        c, s = shape[0], side // 8                     # s = 8 (64x64) or 16 (128x128)
        return nn.Sequential(
            nn.Linear(latent, 1024 * s * s),
            Reshape(1024, s, s),                       # (B, 1024, s, s)
            *_convt(1024, 512, bn=False),             # (B, 512, side/4, side/4)
            *_convt(512, 256, bn=True),               # (B, 256, side/2, side/2)
            *_convt(256, 128, bn=True),               # (B, 128, side, side)
            nn.ConvTranspose2d(128, c, 5, stride=1, padding=2),  # (B, C, side, side)
            _output_activation(output),
        )

    return build


_ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _encoder_mlp,
    "mlp_skip": _encoder_mlp_skip,
    "conv28": _encoder_conv28,
    "conv32": _encoder_conv32,
    "conv64": _encoder_celeba(64),
    "conv128": _encoder_celeba(128),
}

_DECODERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _decoder_mlp,
    "mlp_skip": _decoder_mlp_skip,
    "conv28": _decoder_conv28,
    "conv32": _decoder_conv32,
    "conv64": _decoder_celeba(64),
    "conv128": _decoder_celeba(128),
}


# ----------------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------------

def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _check_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                            for n in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {shape!r}")
    return shape


def _check_positive(value: int, name: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def auto_arch(input_shape: tuple[int, ...]) -> str:
    """The architecture for data of shape input_shape (without the batch dimension).

    Vectors and 8x8 images -> "mlp"; square (C, n, n) or (n, n) images with n = 28, 32, 64,
    128 -> "conv<n>"; anything else -> "mlp" (which works on any shape).
    """
    shape = tuple(input_shape)
    if len(shape) in (2, 3) and shape[-1] == shape[-2]:
        for arch, side in _IMAGE_SIZE.items():
            if shape[-1] == side:
                return arch
    return "mlp"


def _resolve(arch: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """Validates arch against shape; returns the arch name and the (C, H, W) shape that the
    convolutional builders see (the shape itself for "mlp")."""
    if arch == "auto":
        arch = auto_arch(shape)
    if arch not in _ENCODERS:
        raise ValueError(f"unknown arch {arch!r}; use arch='auto' or one of {ARCHS}")
    if arch in ("mlp", "mlp_skip"):  # any shape, flattened
        return arch, shape
    side = _IMAGE_SIZE[arch]
    if len(shape) not in (2, 3) or shape[-2:] != (side, side):
        fits = auto_arch(shape)
        hint = "'mlp'" if fits == "mlp" else f"{fits!r} (what arch='auto' picks) or 'mlp'"
        raise ValueError(
            f"arch {arch!r} expects {side}x{side} images (C, {side}, {side}), got "
            f"{_shape_str(shape)}; for this shape use arch={hint}"
        )
    return arch, shape if len(shape) == 3 else (1, *shape)


def build_encoder(arch: str, input_shape: tuple[int, ...], out_features: int,
                  hidden: int = 256, depth: int = 2) -> nn.Module:
    """Encoder x (B, *input_shape) -> (B, out_features) raw posterior parameters.

    arch: one of ARCHS or "auto" (see auto_arch). hidden, depth: width and number of hidden
    layers of "mlp" (depth=0 is a single linear map); ignored by the convolutional archs.
    """
    shape = _check_shape(input_shape, "input_shape")
    _check_positive(out_features, "out_features")
    _check_positive(hidden, "hidden")
    _check_positive(depth, "depth", minimum=0)
    arch, chw = _resolve(arch, shape)
    net = _ENCODERS[arch](chw, out_features, hidden, depth)
    if chw != shape:  # a 2-D (H, W) image: add the channel dimension first
        net = nn.Sequential(Reshape(*chw), net)
    return net


def build_decoder(arch: str, output_shape: tuple[int, ...], latent_dim: int,
                  output: str = "sigmoid", hidden: int = 256, depth: int = 2) -> nn.Module:
    """Decoder z (B, latent_dim) -> (B, *output_shape).

    output: "sigmoid" (values in [0, 1], images) or "linear" (unbounded, e.g. the latents of a
    second-stage VAE). arch, hidden, depth: as in build_encoder.
    """
    shape = _check_shape(output_shape, "output_shape")
    _check_positive(latent_dim, "latent_dim")
    _check_positive(hidden, "hidden")
    _check_positive(depth, "depth", minimum=0)
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
    arch, chw = _resolve(arch, shape)
    net = _DECODERS[arch](chw, latent_dim, output, hidden, depth)
    if chw != shape:  # a 2-D (H, W) image: drop the single channel at the end
        net = nn.Sequential(net, Reshape(*shape))
    return net
