"""Tests of models/networks.py: shapes, the papers' feature-map sizes, auto_arch, errors and
gradient flow for every architecture at its natural input size."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from models.networks import ARCHS, auto_arch, build_decoder, build_encoder

# arch -> (input shape, latent dim, batch size) at the size each arch is built for.
# conv128 has ~135M parameters, so it runs with the smallest batch that BN accepts.
CASES = {
    "mlp": ((1, 8, 8), 16, 4),
    "mlp_skip": ((1, 8, 8), 16, 4),
    "conv28": ((1, 28, 28), 16, 4),
    "conv32": ((3, 32, 32), 64, 4),
    "conv64": ((3, 64, 64), 64, 4),
    "conv128": ((3, 128, 128), 256, 2),
}


@functools.cache
def nets(arch: str, output: str = "sigmoid") -> tuple[nn.Module, nn.Module]:
    """One encoder/decoder pair per (arch, output), built once for the whole file."""
    shape, latent, _ = CASES[arch]
    torch.manual_seed(0)
    return build_encoder(arch, shape, 2 * latent), build_decoder(arch, shape, latent, output)


def conv_output_shapes(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """(C, H, W) after each Conv2d / ConvTranspose2d of net, in forward order."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def test_archs_are_the_documented_ones():
    assert ARCHS == ("mlp", "mlp_skip", "conv28", "conv32", "conv64", "conv128")
    assert set(CASES) == set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes_and_sigmoid_range(arch):
    shape, latent, batch = CASES[arch]
    enc, dec = nets(arch)
    enc.train(), dec.train()
    h = enc(torch.rand(batch, *shape))
    assert h.shape == (batch, 2 * latent)
    # Raw posterior parameters: no activation at the end, so negative values occur.
    assert (h < 0).any()
    # Large z drives the sigmoid to both ends; it must still stay inside [0, 1].
    x_hat = dec(10 * torch.randn(batch, latent))
    assert x_hat.shape == (batch, *shape)
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert x_hat.max() - x_hat.min() > 0.1


@pytest.mark.parametrize("arch", ARCHS)
def test_linear_output_is_unbounded(arch):
    shape, latent, batch = CASES[arch]
    _, dec = nets(arch, "linear")
    dec.eval()  # running statistics of a fresh BN are (0, 1), so a large z stays large
    with torch.no_grad():
        x_hat = dec(100 * torch.randn(batch, latent))
    assert x_hat.shape == (batch, *shape)
    assert (x_hat < 0).any() and (x_hat > 1).any()


# Feature maps after each conv / transposed conv, as listed in Takida et al., Appendix I
# (conv28: I.1, conv64: I.2, conv128: I.3) and in the conv32 docstring.
PAPER_SIZES = {
    "conv28": (
        [(64, 14, 14), (128, 7, 7)],
        [(64, 14, 14), (1, 28, 28)],
    ),
    "conv32": (
        [(64, 16, 16), (128, 8, 8), (256, 4, 4)],
        [(128, 8, 8), (64, 16, 16), (3, 32, 32)],
    ),
    "conv64": (
        [(128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)],
        [(512, 16, 16), (256, 32, 32), (128, 64, 64), (3, 64, 64)],
    ),
    "conv128": (
        [(128, 64, 64), (256, 32, 32), (512, 16, 16), (1024, 8, 8)],
        [(512, 32, 32), (256, 64, 64), (128, 128, 128), (3, 128, 128)],
    ),
}


@pytest.mark.parametrize("arch", list(PAPER_SIZES))
def test_feature_map_sizes_match_the_papers(arch):
    shape, latent, batch = CASES[arch]
    enc, dec = nets(arch)
    enc.eval(), dec.eval()
    enc_sizes, dec_sizes = PAPER_SIZES[arch]
    assert conv_output_shapes(enc, torch.rand(batch, *shape)) == enc_sizes
    assert conv_output_shapes(dec, torch.randn(batch, latent)) == dec_sizes


@pytest.mark.parametrize("arch", ["conv28", "conv64", "conv128"])
def test_takida_kernels_are_5x5_stride_2_except_the_last_celeba_convt(arch):
    enc, dec = nets(arch)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    convts = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs + convts[:-1])
    assert convts[-1].kernel_size == (5, 5)
    # conv28's last ConvT must upsample 14 -> 28; the CelebA ones stay at full resolution.
    assert convts[-1].stride == ((2, 2) if arch == "conv28" else (1, 1))


def test_conv28_batchnorm_placement_follows_appendix_I1():
    enc, dec = nets("conv28")
    # Encoder: BN only after FC_1024; decoder: BN after both FCs and the first ConvT.
    assert [type(m) for m in enc if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))] == [
        nn.BatchNorm1d]
    assert [m.num_features for m in dec if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))] == [
        1024, 128 * 7 * 7, 64]


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch):
    shape, latent, batch = CASES[arch]
    enc, dec = nets(arch)
    enc.train(), dec.train()
    params = list(enc.parameters()) + list(dec.parameters())
    for p in params:
        p.grad = None
    torch.manual_seed(1)
    x = torch.rand(batch, *shape)
    mu = enc(x)[:, :latent]
    loss = (dec(mu) - x).square().mean() + mu.square().mean()
    loss.backward()
    names = [n for n, _ in enc.named_parameters()] + [n for n, _ in dec.named_parameters()]
    for name, p in zip(names, params):
        assert p.grad is not None, f"{arch}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{arch}: non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"{arch}: zero gradient for {name}"


@pytest.mark.parametrize(
    "shape, arch",
    [
        ((5,), "mlp"),
        ((128,), "mlp"),
        ((1, 8, 8), "mlp"),
        ((8, 8), "mlp"),
        ((1, 28, 28), "conv28"),
        ((28, 28), "conv28"),
        ((3, 28, 28), "conv28"),
        ((3, 32, 32), "conv32"),
        ((1, 32, 32), "conv32"),
        ((3, 64, 64), "conv64"),
        ((3, 128, 128), "conv128"),
        ((3, 28, 32), "mlp"),
        ((3, 48, 48), "mlp"),
        ((2, 3, 32, 32), "mlp"),
    ],
)
def test_auto_arch(shape, arch):
    assert auto_arch(shape) == arch


def test_auto_builds_the_picked_arch_and_2d_images_get_a_channel():
    enc = build_encoder("auto", (28, 28), 8)
    dec = build_decoder("auto", (28, 28), 4)
    assert any(isinstance(m, nn.Conv2d) for m in enc.modules())
    enc.eval(), dec.eval()
    with torch.no_grad():
        assert enc(torch.rand(2, 28, 28)).shape == (2, 8)
        assert dec(torch.randn(2, 4)).shape == (2, 28, 28)


def test_channels_come_from_the_input_shape():
    enc = build_encoder("conv32", (1, 32, 32), 6).eval()
    dec = build_decoder("conv32", (5, 32, 32), 3).eval()
    with torch.no_grad():
        assert enc(torch.rand(2, 1, 32, 32)).shape == (2, 6)
        assert dec(torch.randn(2, 3)).shape == (2, 5, 32, 32)


@pytest.mark.parametrize(
    "arch, shape",
    [("conv28", (1, 32, 32)), ("conv64", (3, 128, 128)), ("conv128", (3, 64, 64)),
     ("conv32", (64,)), ("conv28", (3, 28, 32))],
)
def test_size_mismatch_raises_one_line_naming_the_arch(arch, shape):
    for build in (lambda: build_encoder(arch, shape, 4), lambda: build_decoder(arch, shape, 2)):
        with pytest.raises(ValueError) as err:
            build()
        msg = str(err.value)
        assert "\n" not in msg
        assert repr(arch) in msg and "x".join(map(str, shape)) in msg
        assert "'mlp'" in msg  # says what fits


def test_mismatch_message_suggests_the_matching_arch():
    with pytest.raises(ValueError, match="'conv32'"):
        build_encoder("conv28", (1, 32, 32), 4)


@pytest.mark.parametrize("arch", ["resnet", "Conv28", "", "conv256"])
def test_unknown_arch_raises_naming_it(arch):
    for build in (lambda: build_encoder(arch, (1, 28, 28), 4),
                  lambda: build_decoder(arch, (1, 28, 28), 2)):
        with pytest.raises(ValueError) as err:
            build()
        msg = str(err.value)
        assert "\n" not in msg and repr(arch) in msg and "conv28" in msg


def test_bad_output_and_sizes_raise():
    with pytest.raises(ValueError, match="'tanh'"):
        build_decoder("mlp", (4,), 2, output="tanh")
    with pytest.raises(ValueError, match="out_features"):
        build_encoder("mlp", (4,), 0)
    with pytest.raises(ValueError, match="depth"):
        build_encoder("mlp", (4,), 2, depth=-1)
    with pytest.raises(ValueError, match="input_shape"):
        build_encoder("mlp", (), 2)


def test_mlp_depth_and_width_are_the_second_stage_vae_of_dai_wipf():
    # Dai & Wipf, Appendix D: encoder and decoder with three 1024-dimensional hidden layers.
    enc = build_encoder("mlp", (64,), 128, hidden=1024, depth=3)
    dec = build_decoder("mlp", (64,), 64, output="linear", hidden=1024, depth=3)
    for net, d_in, d_out in ((enc, 64, 128), (dec, 64, 64)):
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 4
        assert [m.out_features for m in linears[:-1]] == [1024, 1024, 1024]
        assert linears[0].in_features == d_in and linears[-1].out_features == d_out
        assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 3
    assert not any(isinstance(m, nn.Sigmoid) for m in dec.modules())
    with torch.no_grad():
        assert enc(torch.randn(3, 64)).shape == (3, 128)
        assert dec(torch.randn(3, 64)).shape == (3, 64)


def test_mlp_default_has_two_hidden_layers_of_width_hidden():
    enc = build_encoder("mlp", (1, 8, 8), 32, hidden=100)
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 100), (100, 100), (100, 32)]
