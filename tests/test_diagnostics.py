"""engine/eval/metrics/diagnostics.py against closed forms and independent computations."""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

import models
from engine.eval.metrics import diagnostics as dg
from models.config import ConfigError

D = 4
SHAPE = (1, 8, 8)


def tiny(name: str = "VAE", latent_dim: int = D, **overrides) -> models.GaussianAutoencoder:
    torch.manual_seed(0)
    return models.build(name, SHAPE, latent_dim=latent_dim, hidden=16, depth=1, **overrides)


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def with_linear_decoder(model) -> nn.Linear:
    """mu_theta(z) = W z + b (decode reshapes (B, 64) to (B, 1, 8, 8))."""
    linear = nn.Linear(model.cfg.latent_dim, math.prod(SHAPE))
    model.decoder = linear
    return linear


def with_encoder(model, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """A linear encoder x -> h = weight x + bias with the given raw posterior parameters."""
    linear = nn.Linear(math.prod(SHAPE), bias.numel())
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    model.encoder = nn.Sequential(nn.Flatten(), linear)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m, m.training) for m in model.modules()], model.cfg)


def assert_unchanged(model, snap) -> None:
    state, modes, cfg = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(m.training == t for m, t in modes)
    assert model.cfg is cfg


# --------------------------------------------------------------------------- Takida Table 1

def test_linear_decoder_gap_els_mse_kl_against_closed_forms():
    model = tiny("VAE")
    linear = with_linear_decoder(model)
    x = images(64)
    out = dg.takida_table1(model, x, s_z2=(1e-2, 1e-3), draws=200, batch_size=24)
    w2 = linear.weight.pow(2).sum().item()  # ||W||_F^2
    # Eq. 6 for a linear decoder: the Jacobian is W everywhere
    assert out["els"] == pytest.approx(w2, rel=1e-5)
    # Eq. 5: W (eps - eps') ~ N(0, 2 s W W^T), E||.||^2 = 2 s ||W||_F^2 (C.8 holds exactly)
    assert out["gap_1e-2"] == pytest.approx(2e-2 * w2, rel=0.05)
    assert out["gap_1e-3"] == pytest.approx(2e-3 * w2, rel=0.05)
    with torch.no_grad():
        post = model.posterior(x)
        w, b = linear.weight, linear.bias
        # E_q ||x - W z - b||^2 = ||x - W mu - b||^2 + tr(W Sigma W^T)
        mse = ((x.flatten(1) - post.mean @ w.T - b).pow(2).sum(1)
               + torch.einsum("ij,bjk,ik->b", w, post.covariance, w)).mean().item()
        kl = kl_divergence(MultivariateNormal(post.mean, scale_tril=post.scale_tril),
                           MultivariateNormal(torch.zeros(D), torch.eye(D))).mean().item()
        sigma_z2 = post.variance.mean().item()
    assert out["mse"] == pytest.approx(mse, rel=0.02)
    assert out["mse_per_pixel"] == pytest.approx(out["mse"] / 64)
    assert out["kl"] == pytest.approx(kl, rel=1e-5)
    assert out["sigma_z2"] == pytest.approx(sigma_z2, rel=1e-6)
    assert set(out) == {"gap_1e-2", "gap_1e-3", "els", "kl", "sigma_z2", "mse", "mse_per_pixel",
                        "mi"}


def test_els_is_the_jacobian_norm_and_the_small_gap_limit():
    model = tiny("VAE")  # a nonlinear (ReLU, sigmoid) decoder
    x = images(32)
    out = dg.takida_table1(model, x, s_z2=(1e-5,), draws=400, batch_size=32)
    with torch.no_grad():
        mean = model.posterior(x).mean
    jac = [torch.autograd.functional.jacobian(lambda z: model.decode(z), m) for m in mean]
    els = float(np.mean([j.pow(2).sum().item() for j in jac]))
    assert out["els"] == pytest.approx(els, rel=1e-4)
    # Appendix C, Eq. C.8: Delta^2(s) / (2 s) -> ELS as s -> 0
    assert out["gap_1e-5"] / 2e-5 == pytest.approx(els, rel=0.06)  # Monte Carlo sd < 0.015


def test_full_covariance_kl_matches_torch_distributions():
    model = tiny("UT-VAE*-full-Σ")
    x = images(20)
    with torch.no_grad():
        post = model.posterior(x)
        assert torch.tril(post.scale_tril, -1).abs().max() > 0.01  # a genuinely full Sigma
        expected = kl_divergence(MultivariateNormal(post.mean, scale_tril=post.scale_tril),
                                 MultivariateNormal(torch.zeros(D), torch.eye(D)))
    assert torch.allclose(dg.kl_to_standard_normal(post.mean, post.scale_tril), expected,
                          rtol=1e-5, atol=1e-6)
    out = dg.takida_table1(model, x, draws=2, batch_size=8)
    assert out["kl"] == pytest.approx(expected.mean().item(), rel=1e-5)


def test_deterministic_encoder_has_no_kl_and_code_entropy_mi():
    model = tiny("AE")
    x = images(10)
    out = dg.takida_table1(model, x, draws=2, batch_size=4, mi_batch_size=4)
    assert math.isnan(out["kl"])
    assert out["sigma_z2"] == 0.0
    # ten distinct codes split into near-equal minibatches of 4, 3, 3: log of each size
    assert out["mi"] == pytest.approx((4 * math.log(4) + 6 * math.log(3)) / 10, rel=1e-9)


def test_code_entropy_counts_shared_codes():
    a, b, c = torch.randn(3, D)
    codes = torch.stack([a, a, b, c])
    assert dg.code_entropy(codes) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))


def test_takida_table1_is_deterministic_and_leaves_the_model_alone():
    model = tiny("VAE")
    model.train()
    model.encoder[0].eval()  # a mixed state must come back as it was
    snap = snapshot(model)
    rng = torch.get_rng_state()
    x = images(12)
    first = dg.takida_table1(model, x, draws=3, batch_size=5, seed=3)
    assert dg.takida_table1(model, x, draws=3, batch_size=5, seed=3) == first
    assert dg.takida_table1(model, x, draws=3, batch_size=5, seed=4) != first
    assert_unchanged(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)


# --------------------------------------------------------------------------- MI bound (Eq. D.1)

def test_mi_bound_is_takida_d1_for_a_shared_isotropic_variance():
    gen = torch.Generator().manual_seed(0)
    n, sigma2, draws = 7, 0.3, 2000
    mean = torch.randn(n, D, generator=gen, dtype=torch.float64)
    tril = math.sqrt(sigma2) * torch.eye(D, dtype=torch.float64).expand(n, D, D)
    z = dg.draw_posterior(mean, tril, draws, gen)  # (S, n, D)
    got = dg.mutual_information_bound(mean, tril, z)
    zz, mu = z.reshape(-1, D).numpy(), mean.numpy()
    log_mean_exp = logsumexp(-((zz[:, None] - mu[None]) ** 2).sum(-1) / (2 * sigma2),
                             axis=1) - np.log(n)  # ln E_x' exp(-||z - mu(x')||^2 / 2 sigma^2)
    # D.1 with each draw's own ||eps||^2 / 2 for d_z / 2: the same draws give the same value
    eps2 = (((z - mean) ** 2).sum(-1) / sigma2).reshape(-1).numpy()
    assert got == pytest.approx(np.mean(-eps2 / 2 - log_mean_exp), rel=1e-10)
    # ... and D.1 literally has the same expectation (its Monte Carlo sd is 0.01 here)
    assert got == pytest.approx(-np.mean(log_mean_exp) - D / 2, abs=0.05)


def test_mi_bound_with_full_covariances_matches_scipy():
    gen = torch.Generator().manual_seed(1)
    n, draws = 5, 4
    mean = torch.randn(n, D, generator=gen, dtype=torch.float64)
    tril = torch.tril(0.3 * torch.randn(n, D, D, generator=gen, dtype=torch.float64), -1)
    tril = tril + torch.diag_embed(0.2 + torch.rand(n, D, generator=gen, dtype=torch.float64))
    z = dg.draw_posterior(mean, tril, draws, gen)  # (S, n, D)
    got = dg.mutual_information_bound(mean, tril, z)
    comps = [multivariate_normal(m.numpy(), (l @ l.T).numpy()) for m, l in zip(mean, tril)]
    flat = z.reshape(-1, D).numpy()
    log_q = logsumexp(np.stack([c.logpdf(flat) for c in comps]), axis=0) - np.log(n)
    own = np.stack([comps[i].logpdf(z[:, i].numpy()) for i in range(n)], axis=1).reshape(-1)
    assert got == pytest.approx(np.mean(own - log_q), rel=1e-9)


def test_mi_bound_limits_log_n_and_zero():
    gen = torch.Generator().manual_seed(2)
    n = 6
    tril = 1e-3 * torch.eye(D).expand(n, D, D)
    apart = 100 * torch.randn(n, D, generator=gen)
    z = dg.draw_posterior(apart, tril, 10, gen)
    assert dg.mutual_information_bound(apart, tril, z) == pytest.approx(math.log(n), rel=1e-6)
    same = torch.randn(1, D, generator=gen).expand(n, D)
    z = dg.draw_posterior(same, tril, 10, gen)
    assert dg.mutual_information_bound(same, tril, z) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- Dai & Wipf spectrum

def test_spectrum_of_known_diagonal_variances():
    model = tiny("VAE")
    variances = torch.tensor([0.5, 1e-3, 0.97, 0.05])
    weight = torch.zeros(2 * D, 64)
    weight[:D] = 0.1 * torch.randn(D, 64)  # means vary with x, variances do not
    with_encoder(model, weight, torch.cat([torch.zeros(D), variances.log()]))
    stats, spectrum = dg.encoder_spectrum(model, images(10), batch_size=3)
    np.testing.assert_allclose(spectrum, np.sort(variances.numpy()), rtol=1e-5)
    assert stats["active_dims"] == 2 and stats["inactive_dims"] == 1
    assert stats["intermediate_dims"] == 1 and stats["active_dims_per_input"] == 2
    assert math.isnan(stats["gamma"])


def test_spectrum_of_a_known_full_covariance():
    model = tiny("UT-VAE*-full-Σ")
    scale_tril = torch.tensor([[0.3, 0.0, 0.0, 0.0], [0.5, 0.2, 0.0, 0.0],
                               [-0.4, 0.1, 0.9, 0.0], [0.0, 0.3, -0.2, 0.05]])
    rows, cols = torch.tril_indices(D, D, offset=-1)
    bias = torch.cat([torch.zeros(D), 2 * scale_tril.diagonal().log(), scale_tril[rows, cols]])
    with_encoder(model, torch.zeros(bias.numel(), 64), bias)
    _, spectrum = dg.encoder_spectrum(model, images(6))
    cov = (scale_tril @ scale_tril.T).double().numpy()
    np.testing.assert_allclose(spectrum, np.linalg.eigvalsh(cov), rtol=1e-5, atol=1e-7)


def test_active_dims_per_input_sees_rotating_posteriors():
    """Half the inputs use dimension 1, half dimension 2: each input has one active dimension,
    the average covariance has none."""
    model = tiny("VAE", latent_dim=2)
    lo, hi = math.log(0.01), 0.0
    weight = torch.zeros(4, 64)
    weight[2, 0], weight[3, 0] = hi - lo, lo - hi  # pixel 0 swaps which variance is small
    with_encoder(model, weight, torch.tensor([0.0, 0.0, lo, hi]))
    x = torch.zeros(8, *SHAPE)
    x[::2, 0, 0, 0] = 1
    stats, spectrum = dg.encoder_spectrum(model, x)
    np.testing.assert_allclose(spectrum, [0.505, 0.505], rtol=1e-5)
    assert stats["active_dims"] == 0 and stats["intermediate_dims"] == 2
    assert stats["active_dims_per_input"] == pytest.approx(1.0)


def test_spectrum_gamma_and_point_encoders():
    learned = tiny("VAE-learned-γ")
    with torch.no_grad():
        learned.log_variance.log_var.fill_(math.log(0.3))
    assert dg.encoder_spectrum(learned, images(4))[0]["gamma"] == pytest.approx(0.3)
    fixed = tiny("VAE-fixed-γ", sigma_x2=0.5)
    assert dg.encoder_spectrum(fixed, images(4))[0]["gamma"] == 0.5
    stats, spectrum = dg.encoder_spectrum(tiny("AE"), images(4))
    assert np.all(spectrum == 0) and stats["active_dims"] == D


# --------------------------------------------------------------------------- UAE gradient variance

def test_gradient_variance_matches_an_independent_computation():
    model = tiny("VAE")
    x = images(16)
    out = dg.gradient_variance(model, x, samplings=("reparam",), draws=6, batch_size=16, seed=5)
    params = list(model.encoder.parameters())
    model.eval()
    torch.manual_seed(5)
    grads = np.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        model.loss(x)["loss"], params)]).double().numpy() for _ in range(6)])
    assert out["grad_var_reparam"] == pytest.approx(grads.var(0, ddof=1).sum(), rel=1e-6)
    assert out["grad_sqnorm_reparam"] == pytest.approx((grads ** 2).sum(1).mean(), rel=1e-6)


@pytest.mark.parametrize("preset, sampling", [
    ("VAE", "unscented"),  # one random sigma point instead of a draw
    ("UAE", "reparam"),  # a full posterior's draws instead of its sigma points
    ("UAE-8σ-mean", "unscented_all"),  # a fixed point set: num_samples 8 -> 1
])
def test_another_samplings_gradient_variance_is_a_model_built_with_it(preset, sampling):
    """The scheme is handed to model.loss, never swapped into the model: its config stays the
    same object throughout (assigning model.cfg fails here), and the numbers are those of a
    model built with the other sampling and the same parameters."""
    model = tiny(preset)
    x = images(16)
    cfg = model.cfg

    class NoConfigSwap(type(model)):
        def __setattr__(self, name, value):
            if name == "cfg":
                raise AssertionError("model.cfg was assigned")
            super().__setattr__(name, value)
    model.__class__ = NoConfigSwap
    out = dg.gradient_variance(model, x, samplings=(sampling,), draws=4, batch_size=16, seed=5)
    assert model.cfg is cfg and model.cfg.sampling != sampling

    sibling = models.build(cfg.with_sampling(sampling), SHAPE)
    sibling.load_state_dict(model.state_dict())
    sibling.eval()
    params = list(sibling.encoder.parameters())
    torch.manual_seed(5)
    grads = np.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        sibling.loss(x)["loss"], params)]).double().numpy() for _ in range(4)])
    assert out[f"grad_var_{sampling}"] == pytest.approx(grads.var(0, ddof=1).sum(),
                                                        rel=1e-9, abs=1e-30)
    assert out[f"grad_sqnorm_{sampling}"] == pytest.approx((grads ** 2).sum(1).mean(), rel=1e-9)


def test_sigma_points_have_no_variance_when_all_are_used():
    model = tiny("UAE")  # full posterior, Wasserstein, eigenvalue-weighted gradient penalty
    x = images(16)
    out = dg.gradient_variance(model, x, samplings=("reparam", "unscented", "unscented_all"),
                               draws=4, batch_size=16)
    assert out["grad_var_reparam"] > 0 and out["grad_var_unscented"] > 0
    assert out["grad_var_unscented_all"] == 0.0
    # batching: the gradient of the mean loss does not depend on batch_size
    chunked = dg.gradient_variance(model, x, samplings=("unscented_all",), draws=2, batch_size=5)
    assert chunked["grad_sqnorm_unscented_all"] == pytest.approx(
        out["grad_sqnorm_unscented_all"], rel=1e-5)


def test_sigma_points_are_the_exact_expected_gradient_for_a_linear_decoder():
    """With mu_theta linear the loss is quadratic in z, so all 2D+1 sigma points give
    E_q[grad] exactly (UAE Sec. 4.1): the mean of many reparameterized gradients tends to it,
    while decoding only z = mu is biased."""
    model = tiny("VAE")
    with_linear_decoder(model)
    x = images(64)
    n = 400
    out = dg.gradient_variance(model, x, samplings=("reparam", "unscented_all", "mean"),
                               draws=n, batch_size=64)
    # ||mean g||^2 = E||g||^2 - (n-1)/n var, and E||mean g||^2 = ||E g||^2 + var / n
    mean_sq = out["grad_sqnorm_reparam"] - (n - 1) / n * out["grad_var_reparam"]
    expected = out["grad_sqnorm_unscented_all"] + out["grad_var_reparam"] / n
    assert mean_sq == pytest.approx(expected, rel=0.1)  # Monte Carlo sd about 0.02
    assert out["grad_sqnorm_mean"] < 0.5 * out["grad_sqnorm_unscented_all"]  # the test has teeth


def test_point_posterior_gradient_variance_is_zero():
    model = tiny("AE")
    x = images(8)
    out = dg.gradient_variance(model, x, samplings=("reparam", "unscented"), draws=3)
    grads = torch.autograd.grad(model.loss(x)["loss"], list(model.encoder.parameters()))
    sqnorm = sum(g.double().pow(2).sum().item() for g in grads)
    for s in ("reparam", "unscented"):
        assert out[f"grad_var_{s}"] == 0.0
        assert out[f"grad_sqnorm_{s}"] == pytest.approx(sqnorm, rel=1e-6)


def test_gradient_variance_restores_the_model_even_on_error():
    model = tiny("VAE")
    model.train()
    marker = torch.full_like(model.decoder[0].weight, 7.0)
    model.decoder[0].weight.grad = marker
    snap = snapshot(model)
    rng = torch.get_rng_state()
    x = images(8)
    dg.gradient_variance(model, x, samplings=("reparam", "unscented_all"), draws=2)
    assert_unchanged(model, snap)
    assert model.decoder[0].weight.grad is marker and torch.all(marker == 7.0)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ConfigError):
        dg.gradient_variance(model, x, samplings=("reparam", "no_such_sampler"), draws=2)
    assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="draws"):
        dg.gradient_variance(model, x, draws=1)
    with pytest.raises(ConfigError):  # a point posterior checks the names too
        dg.gradient_variance(tiny("AE"), x, samplings=("no_such_sampler",), draws=2)
