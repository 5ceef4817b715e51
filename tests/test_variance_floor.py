"""The floor of the trainable per-pixel decoder variance (decoder_variance="diag_d_trainable_floor").

Sigma_x = exp(log Sigma_x) + var_floor (Takida's 1e-6): its NLL against torch.distributions'
Normal at that sigma, its gradient against the closed form, and the failure it prevents (the
unfloored head's gradient is not finite once exp(log Sigma_x) leaves float32's normal range,
as variance_parameterization's Diag-D-trainable row measured on MNIST-5k's always-0 pixels).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import models
from models import Config, ConfigError
from models.config import axis_values
from models.variances import DECODER_VARIANCES, VAR_FLOOR, floored_variance

FLOORED = DECODER_VARIANCES["diag_d_trainable_floor"]
RAW = DECODER_VARIANCES["diag_d_trainable"]


def _problem(dtype, s=3, b=4, shape=(1, 3, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *shape, generator=g, dtype=dtype)
    x[..., 0, :] = 0.0  # an always-0 row, as MNIST's border
    x_hat = torch.rand(s, b, *shape, generator=g, dtype=dtype)
    x_hat[..., 0, :] = 0.0  # reconstructed exactly: squared error 0
    weights = torch.softmax(torch.randn(s, generator=g, dtype=dtype), 0)
    # log Sigma_x from far below the floor (exp underflows) to well above it
    log_var = torch.empty(s, b, *shape, dtype=dtype).uniform_(-20.0, 1.0, generator=g)
    log_var[..., 0, :] = torch.tensor([-200.0, -95.0, math.log(VAR_FLOOR)], dtype=dtype)
    return x, x_hat, weights, log_var


@pytest.mark.parametrize("floor", [None, 1e-3])  # the default 1e-6, and a config's var_floor
def test_floored_nll_is_normal_log_prob_at_the_floored_sigma(floor):
    x, x_hat, weights, log_var = _problem(torch.float64)
    cfg = None if floor is None else Config(var_floor=floor)
    eps = VAR_FLOOR if floor is None else floor
    loss, var = FLOORED(x, x_hat, weights, log_var, cfg)
    sigma = torch.sqrt(torch.exp(log_var) + eps)
    log_prob = Normal(x_hat, sigma).log_prob(x.expand_as(x_hat)).flatten(2).sum(-1)  # (S, B)
    assert torch.allclose(loss, -(weights[:, None] * log_prob).sum(0), rtol=1e-12, atol=1e-9)
    assert torch.allclose(var, sigma.pow(2), rtol=1e-14, atol=0)
    assert var.min() >= eps and torch.allclose(var[..., 0, 0], torch.tensor(eps, dtype=var.dtype))
    # the log Sigma_x that evaluation should take is the same variance
    assert torch.allclose(torch.exp(FLOORED.log_variance(log_var, cfg)), var, rtol=1e-12, atol=0)
    assert RAW.log_variance(log_var) is log_var


def test_gradient_at_the_floor_is_the_closed_form_and_finite_in_float32():
    # d/d lv of 1/2 [e2 / v + log(2 pi v)] with v = exp(lv) + c: 1/2 s (1 - e2 / v), s = exp(lv) / v
    x, x_hat, weights, log_var = _problem(torch.float64)
    lv = log_var.clone().requires_grad_(True)
    FLOORED(x, x_hat, weights, lv)[0].sum().backward()
    v = torch.exp(log_var) + VAR_FLOOR
    expected = weights.view(-1, 1, 1, 1, 1) * 0.5 * torch.exp(log_var) / v * (
        1 - (x - x_hat).pow(2) / v)
    assert torch.allclose(lv.grad, expected, rtol=1e-10, atol=1e-300)
    # below the floor the pull on log Sigma_x vanishes (as exp(lv) / c)
    assert (lv.grad[..., 0, 0].abs() < 1e-80).all() and (lv.grad[..., 0, 1].abs() < 1e-35).all()

    # float32, as training runs: log Sigma_x = -95 (exp subnormal) and -200 (exp = 0)
    x, x_hat, weights, log_var = _problem(torch.float32)
    floored = log_var.clone().requires_grad_(True)
    loss = FLOORED(x, x_hat, weights, floored)[0].sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(floored.grad).all()
    assert (floored.grad[..., 0, 0] == 0).all()  # exp(-200) underflows to 0, and so does this
    # the unfloored term at the same values: 1 / Sigma_x overflows in log's backward
    raw = log_var.clone().requires_grad_(True)
    RAW(x, x_hat, weights, raw)[0].sum().backward()
    assert not torch.isfinite(raw.grad[..., 0, 1]).any()  # -95: exp(-95) is subnormal
    assert torch.isfinite(raw.grad[..., 1:, :]).all()  # in the normal range it is finite


def test_floored_variance_is_smooth_and_bounded():
    lv = torch.tensor([-1e4, -200.0, -95.0, math.log(1e-6), 0.0, 3.0], requires_grad=True)
    v = floored_variance(lv, 1e-6)
    v.sum().backward()
    assert (v >= 1e-6).all() and torch.allclose(v[3], torch.tensor(2e-6))
    assert torch.equal(lv.grad, torch.exp(lv.detach()))  # d v / d lv = exp(lv), >= 0, no 0 * inf


def test_diag_d_trainable_preset_uses_the_floor():
    cfg = models.PRESETS["Diag-D-trainable"]
    assert cfg.decoder_variance == "diag_d_trainable_floor" and cfg.var_floor == 1e-6
    assert FLOORED.trainable == RAW.trainable == ("dependent", "diagonal")
    assert FLOORED.source == RAW.source and FLOORED.floored and not RAW.floored
    assert "diag_d_trainable_floor" in axis_values("decoder_variance")
    with pytest.raises(ConfigError, match="var_floor"):
        Config(var_floor=0.0)


def test_floored_model_trains_where_the_unfloored_gradient_is_not_finite():
    # the measured failure in a tiny model: the head's log Sigma_x at -95 for every pixel
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grads = {}
    for kind in ("diag_d_trainable_floor", "diag_d_trainable"):
        torch.manual_seed(0)
        m = models.build("Diag-D-trainable", (1, 4, 4), latent_dim=2, arch="mlp", hidden=8,
                         decoder_variance=kind)
        m.log_variance.head.bias.data.fill_(-95.0)
        terms = m.loss(x)
        terms["loss"].backward()
        grads[kind] = all(torch.isfinite(p.grad).all() for p in m.parameters()
                          if p.grad is not None)
        if kind == "diag_d_trainable_floor":
            assert torch.isfinite(terms["loss"])
            assert terms["sigma_x2"].item() == pytest.approx(1e-6, rel=1e-4)
    assert grads == {"diag_d_trainable_floor": True, "diag_d_trainable": False}


def test_evaluation_reads_the_floored_log_variance_the_training_term_uses():
    """decoder_log_variance (the NLL's and the variance maps' LATENT source) is the floored
    log Sigma_x, not the head's raw output."""
    torch.manual_seed(0)
    model = models.build("Diag-D-trainable", (1, 4, 4), latent_dim=2, arch="mlp", hidden=8,
                         var_floor=1e-3)
    z = torch.randn(5, 2)
    with torch.no_grad():
        raw = model.log_variance(z)
        got = model.decoder_log_variance(z)
    assert torch.allclose(torch.exp(got), torch.exp(raw) + 1e-3, rtol=1e-6)
    plain = models.build("Diag-D-trainable", (1, 4, 4), latent_dim=2, arch="mlp", hidden=8,
                         decoder_variance="diag_d_trainable")
    with torch.no_grad():
        assert torch.equal(plain.decoder_log_variance(z), plain.log_variance(z))
