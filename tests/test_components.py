"""Every loss component against a closed form or an independent computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from models import Config
from models.codebooks import soft_codebook, vector_quantized
from models.decoder_regs import decoder_output_gradient, eig_gradient_penalty, gradient_penalty
from models.posteriors import POSTERIORS, Posterior
from models.regularizers import (
    half_squared_norm, imq_kernel, kl_to_standard_normal, mmd_to_standard_normal,
    wasserstein2_to_standard_normal)
from models.samplers import SAMPLERS, Samples, sigma_points
from models.variances import MLE_EPS, DECODER_VARIANCES

@pytest.fixture(autouse=True)
def float64():
    """Closed forms are compared to 1e-10, so these tests run in double precision."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def random_posterior(b=5, d=4, full=True, seed=0) -> Posterior:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(b, d, generator=g)
    if full:
        L = torch.randn(b, d, d, generator=g).tril(-1)
    else:
        L = torch.zeros(b, d, d)
    L = L + torch.diag_embed(torch.rand(b, d, generator=g) + 0.3)
    return Posterior(mean, L)


# --- posteriors --------------------------------------------------------------------------

def test_full_head_builds_lower_triangular_factor_with_positive_diagonal():
    d = 4
    h = torch.randn(3, POSTERIORS["full"].num_params(d))
    post = POSTERIORS["full"].from_params(h, d)
    assert torch.equal(post.scale_tril, post.scale_tril.tril())
    assert (torch.diagonal(post.scale_tril, dim1=-2, dim2=-1) > 0).all()
    # the diagonal is exp(log_var / 2) and the off-diagonal entries are the raw parameters
    assert torch.allclose(torch.diagonal(post.scale_tril, dim1=-2, dim2=-1), torch.exp(h[:, d:2 * d] / 2))
    rows, cols = torch.tril_indices(d, d, offset=-1)
    assert torch.equal(post.scale_tril[:, rows, cols], h[:, 2 * d:])


def test_bounded_full_head_is_the_uae_authors_factor():
    """L as boschresearch/unscented-autoencoder's lower_tri_cov_matrix_from_logvar_corr builds
    it (models/dist_utils.py), with fullcov_vae.py's tanh on r and + 1e-6 I, here in numpy."""
    d, b = 4, 3
    h = torch.randn(b, POSTERIORS["full_bounded"].num_params(d), generator=torch.Generator()
                    .manual_seed(1), dtype=torch.float64)
    post = POSTERIORS["full_bounded"].from_params(h, d)
    x = h.numpy()
    std, rho = np.exp(0.5 * x[:, d:2 * d]), np.tanh(x[:, 2 * d:])
    expected = np.zeros((b, d, d))
    for n in range(b):
        var = np.outer(std[n], std[n])  # sigma_i sigma_j
        corr = np.zeros((d, d))
        corr[np.tril_indices(d, -1)] = rho[n]  # row-major below the diagonal, as theirs
        expected[n] = var * corr + np.diag(std[n]) + 1e-6 * np.eye(d)
    np.testing.assert_allclose(post.scale_tril.numpy(), expected, rtol=1e-12, atol=0)
    # bounded: |L_ij| <= sigma_i sigma_j, so the off-diagonals shrink with the sigmas where
    # `full`'s raw ones stay (the UAE's wide full-covariance posteriors, issue 13)
    narrow = h.clone()
    narrow[:, d:2 * d] -= 4.0  # every sigma / e^2
    shrunk = POSTERIORS["full_bounded"].from_params(narrow, d).scale_tril
    rows, cols = torch.tril_indices(d, d, offset=-1)
    torch.testing.assert_close(shrunk[:, rows, cols], post.scale_tril[:, rows, cols] / np.e ** 4)
    raw = POSTERIORS["full"].from_params(narrow, d).scale_tril
    assert torch.equal(raw[:, rows, cols], narrow[:, 2 * d:])


def test_diagonal_and_point_heads():
    d = 3
    h = torch.randn(2, 2 * d)
    post = POSTERIORS["diagonal"].from_params(h, d)
    assert torch.allclose(post.variance, torch.exp(h[:, d:]))
    assert torch.count_nonzero(post.scale_tril - torch.diag_embed(post.variance.sqrt())) == 0
    point = POSTERIORS["point"].from_params(h[:, :d], d)
    assert torch.equal(point.mean, h[:, :d]) and not point.scale_tril.any()


# --- latent regularizers -----------------------------------------------------------------

@pytest.mark.parametrize("full", [False, True])
def test_kl_matches_torch_distributions(full):
    post = random_posterior(full=full)
    d = post.mean.shape[1]
    expected = kl_divergence(MultivariateNormal(post.mean, scale_tril=post.scale_tril),
                             MultivariateNormal(torch.zeros(d), torch.eye(d)))
    assert torch.allclose(kl_to_standard_normal(post, None), expected, atol=1e-10)


def test_wasserstein_identity_eq19_and_exact_w2_for_diagonal():
    post = random_posterior(full=True)
    d = post.mean.shape[1]
    value = wasserstein2_to_standard_normal(post, None)
    cov = post.covariance
    # Eq. 18-19: ||mu||^2 + tr(Sigma) + n - 2 tr(L) == ||mu||^2 + ||L - I||_F^2
    eq18 = (post.mean.pow(2).sum(-1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1) + d
            - 2 * post.scale_tril.diagonal(dim1=-2, dim2=-1).sum(-1))
    assert torch.allclose(value, eq18, atol=1e-10)
    # the exact W2^2 to N(0, I) uses tr(Sigma^(1/2)) >= tr(L): the paper's form bounds it above
    exact = torch.tensor([
        float(m @ m) + float(np.trace(c)) + d - 2 * float(np.trace(scipy.linalg.sqrtm(c)).real)
        for m, c in zip(post.mean.numpy(), cov.numpy())])
    assert (value >= exact - 1e-9).all() and (value > exact + 1e-6).any()
    diag = random_posterior(full=False)
    exact_diag = (diag.mean.pow(2).sum(-1)
                  + (diag.variance.sqrt() - 1).pow(2).sum(-1))  # sum_i (sigma_i - 1)^2
    assert torch.allclose(wasserstein2_to_standard_normal(diag, None), exact_diag, atol=1e-10)


def test_half_squared_norm_is_weighted_over_samples():
    z = torch.randn(3, 4, 2)
    w = torch.tensor([0.5, 0.25, 0.25])
    expected = sum(w[s] * 0.5 * (z[s] ** 2).sum(-1) for s in range(3))
    assert torch.allclose(half_squared_norm(None, Samples(z, w)), expected)


def test_the_uae_codes_unsquared_terms_in_numpy():
    """The W2 and RAE terms as boschresearch/unscented-autoencoder computes them: the
    Frobenius norm of L + 1e-6 (every entry) - I plus ||mu||_2; ||z||_2. Unsquared."""
    from models.regularizers import REGULARIZERS
    post = random_posterior(full=True)
    d = post.mean.shape[1]
    expected = [np.linalg.norm(L + 1e-6 * np.ones((d, d)) - np.eye(d), "fro") + np.linalg.norm(m)
                for L, m in zip(post.scale_tril.double().numpy(), post.mean.double().numpy())]
    np.testing.assert_allclose(REGULARIZERS["wasserstein_unsquared"](post, None).numpy(),
                               expected, rtol=1e-6)
    # at the prior (mu = 0, L = I) only the 1e-6 of D^2 entries is left; the squared form is 0
    eye = Posterior(torch.zeros(1, d), torch.eye(d)[None])
    assert REGULARIZERS["wasserstein_unsquared"](eye, None).item() == pytest.approx(1e-6 * d)
    z = torch.randn(3, 4, 2)
    w = torch.tensor([0.5, 0.25, 0.25])
    norms = sum(float(w[s]) * np.linalg.norm(z[s].numpy(), axis=-1) for s in range(3))
    np.testing.assert_allclose(REGULARIZERS["l2_unsquared"](None, Samples(z, w)).numpy(), norms,
                               rtol=1e-6)


def test_mmd_matches_an_explicit_double_loop():
    z = torch.randn(1, 6, 3)
    torch.manual_seed(7)
    value = mmd_to_standard_normal(None, Samples(z, torch.ones(1)))
    torch.manual_seed(7)
    prior = torch.randn(6, 3)  # the same draws as inside the function
    x = z[0]

    def k(a, b):
        return sum(2 * 3 * s / (2 * 3 * s + float(((a - b) ** 2).sum()))
                   for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))
    n = 6
    zz = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(prior[i], prior[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    zp = sum(k(x[i], prior[j]) for i in range(n) for j in range(n)) / n ** 2
    assert value.item() == pytest.approx(zz + pp - 2 * zp, rel=1e-10)
    assert imq_kernel(x, x).diagonal().allclose(torch.full((n,), 7.0))  # k(x, x) = #scales


# --- samplers ----------------------------------------------------------------------------

@pytest.mark.parametrize("kappa", [0.0, 1e-3, 2.0, -1.5])
def test_sigma_points_reproduce_mean_and_covariance_exactly(kappa):
    post = random_posterior(full=True, d=4)
    points, w = sigma_points(post.mean, post.scale_tril, kappa)
    assert points.shape == (9, 5, 4) and w.sum().item() == pytest.approx(1.0)
    mean = torch.einsum("s,sbd->bd", w, points)
    centred = points - mean
    cov = torch.einsum("s,sbi,sbj->bij", w, centred, centred)
    assert torch.allclose(mean, post.mean, atol=1e-12)
    assert torch.allclose(cov, post.covariance, atol=1e-12)
    # the points lie at mu +- sqrt(kappa + D) L[:, i] (UAE Eq. 5)
    assert torch.allclose(points[1] - post.mean, math.sqrt(kappa + 4) * post.scale_tril[:, :, 0])
    assert torch.allclose(points[5] - post.mean, -math.sqrt(kappa + 4) * post.scale_tril[:, :, 0])


def test_reparameterized_draws_have_the_posterior_moments():
    post = random_posterior(b=1, d=3, full=True)
    torch.manual_seed(0)
    s = SAMPLERS["reparam"](post, Config(latent_dim=3, num_samples=200_000))
    z = s.z[:, 0]
    assert s.weights.sum().item() == pytest.approx(1.0)
    assert torch.allclose(z.mean(0), post.mean[0], atol=0.02)
    assert torch.allclose(torch.cov(z.T), post.covariance[0], atol=0.03)


def test_unscented_random_picks_distinct_sigma_points_per_input():
    post = random_posterior(b=6, d=3, full=True)
    cfg = Config(latent_dim=3, sampling="unscented", num_samples=4)
    torch.manual_seed(0)
    s = SAMPLERS["unscented"](post, cfg)
    points, _ = sigma_points(post.mean, post.scale_tril, cfg.kappa)
    assert s.z.shape == (4, 6, 3) and torch.allclose(s.weights, torch.full((4,), 0.25))
    for b in range(6):
        idx = [int(torch.cdist(s.z[k, b][None], points[:, b]).argmin()) for k in range(4)]
        assert all(torch.allclose(s.z[k, b], points[i, b]) for k, i in enumerate(idx))
        assert len(set(idx)) == 4  # without replacement
    # over many steps every point gets picked: the draw is uniform over all 2D+1
    seen = {int(torch.cdist(SAMPLERS["unscented"](post, cfg).z[0, :1], points[:, 0]).argmin())
            for _ in range(200)}
    assert seen == set(range(7))


def test_unscented_rows_are_the_uae_codes_points_whose_spread_is_lt_l():
    """mu +- sqrt(kappa + D) L[i, :], as boschresearch/unscented-autoencoder's get_sigma_pts
    (models/dist_utils.py) builds them, here in numpy; all 2D+1 with the UT weights spread as
    L^T L, where the columns' spread is Sigma = L L^T."""
    d, kappa = 3, 1e-3
    post = random_posterior(b=4, d=d, full=True)
    cfg = Config(latent_dim=d, sampling="unscented_rows", num_samples=2 * d + 1, kappa=kappa)
    torch.manual_seed(0)
    s = SAMPLERS["unscented_rows"](post, cfg)  # every point once (without replacement)
    L, mu = post.scale_tril.double().numpy(), post.mean.double().numpy()
    for b in range(4):
        theirs = np.concatenate([mu[b][None], mu[b] + np.sqrt(kappa + d) * L[b],
                                 mu[b] - np.sqrt(kappa + d) * L[b]])  # (2D+1, D): rows of L
        ours = s.z[:, b].double().numpy()
        assert sorted(map(tuple, ours.round(5))) == sorted(map(tuple, theirs.round(5)))
        w = np.full(2 * d + 1, 1 / (2 * (d + kappa)))
        w[0] = kappa / (d + kappa)
        spread = (w[:, None, None] * np.einsum("ni,nj->nij", theirs - mu[b], theirs - mu[b])).sum(0)
        np.testing.assert_allclose(spread, L[b].T @ L[b], rtol=1e-9)
        assert not np.allclose(spread, L[b] @ L[b].T)  # the posterior's own covariance
    diag = random_posterior(b=4, d=d, full=False)  # a diagonal L: rows and columns agree
    torch.manual_seed(1)
    a = SAMPLERS["unscented_rows"](diag, cfg).z
    torch.manual_seed(1)
    torch.testing.assert_close(a, SAMPLERS["unscented"](diag, cfg.replace(sampling="unscented")).z)


def test_unscented_all_and_mean_flags():
    post = random_posterior(b=2, d=3)
    cfg = Config(latent_dim=3, sampling="unscented_all")
    s = SAMPLERS["unscented_all"](post, cfg)
    points, w = sigma_points(post.mean, post.scale_tril, cfg.kappa)
    assert torch.equal(s.z, points) and torch.equal(s.weights, w) and not s.combine
    m = SAMPLERS["unscented_mean"](post, Config(latent_dim=3, sampling="unscented_mean",
                                               num_samples=3))
    assert m.combine and m.z.shape == (3, 2, 3)
    assert torch.equal(SAMPLERS["mean"](post, cfg).z[0], post.mean)


# --- reconstruction terms ----------------------------------------------------------------

def _recon_inputs(s=3, b=4, x_shape=(1, 2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *x_shape, generator=g)
    x_hat = torch.rand(s, b, *x_shape, generator=g)
    w = torch.rand(s, generator=g)
    return x, x_hat, w / w.sum()


def _nll(x, x_hat, w, var):
    """-sum_pixels log N(x | x_hat, var), weighted over samples, per input (torch.distributions)."""
    var = torch.as_tensor(var).expand_as(x_hat) if torch.as_tensor(var).dim() == 0 else var
    lp = Normal(x_hat, var.sqrt().expand_as(x_hat)).log_prob(x.expand_as(x_hat))
    return -(w.view(-1, 1, 1, 1, 1) * lp).sum(0).flatten(1).sum(-1)


def test_mse_sse_and_fixed_variance():
    x, x_hat, w = _recon_inputs()
    mse, _ = DECODER_VARIANCES["mse"](x, x_hat, w, None, None)
    expected = sum(w[s] * ((x - x_hat[s]) ** 2).flatten(1).mean(-1) for s in range(3))
    assert torch.allclose(mse, expected)
    sse, _ = DECODER_VARIANCES["sse"](x, x_hat, w, None, None)
    assert torch.allclose(sse, expected * x[0].numel())
    fixed, var = DECODER_VARIANCES["fixed"](x, x_hat, w, None, Config(sigma_x2=0.3))
    assert torch.allclose(fixed, _nll(x, x_hat, w, torch.tensor(0.3)))


def _numpy_mle(x, x_hat, w, kind, eps=MLE_EPS):
    """The MLE of Sigma_x by its definition (Takida G.4, G.7, G.11, G.15), in numpy."""
    e = np.einsum("s,sb...->b...", w.numpy(), (x[None].numpy() - x_hat.numpy()) ** 2)
    b = e.shape[0]
    if kind == "iso_i":
        return np.full_like(e, e.mean())
    if kind == "iso_d":
        return np.broadcast_to(e.reshape(b, -1).mean(1).reshape(b, 1, 1, 1), e.shape) + eps
    if kind == "diag_i":
        return np.broadcast_to(e.mean(0, keepdims=True), e.shape) + eps
    return e + eps  # diag_d


@pytest.mark.parametrize("kind", ["iso_i", "iso_d", "diag_i", "diag_d"])
@pytest.mark.parametrize("eps", [None, 1e-2])  # the default 1e-6, and a config's mle_eps
def test_mle_objective_is_the_gaussian_nll_at_the_estimated_variance(kind, eps):
    x, x_hat, w = _recon_inputs()
    cfg = None if eps is None else Config(mle_eps=eps)
    value, var = DECODER_VARIANCES[f"{kind}_mle"](x, x_hat, w, None, cfg)
    var_np = torch.from_numpy(np.ascontiguousarray(_numpy_mle(x, x_hat, w, kind,
                                                              eps or MLE_EPS)))
    assert torch.allclose(var.expand_as(var_np), var_np, rtol=1e-12)
    assert torch.allclose(value, _nll(x, x_hat, w, var_np[None].expand_as(x_hat)), rtol=1e-10)


@pytest.mark.parametrize("kind,closed_form", [
    # Takida G.9, G.13, G.17 without their constants: the objective's gradient must be theirs
    ("iso_d", lambda e: e.shape[-1] / 2 * torch.log(e.mean(-1) + MLE_EPS).sum()),
    ("diag_i", lambda e: e.shape[0] * 0.5 * torch.log(e.mean(0) + MLE_EPS).sum()),
    ("diag_d", lambda e: 0.5 * torch.log(e + MLE_EPS).sum()),
])
def test_mle_gradient_is_the_gradient_of_the_closed_form(kind, closed_form):
    x, x_hat, _ = _recon_inputs(s=1, b=4)
    x_hat = x_hat.clone()
    x_hat[0, 0, 0, 0, :2] = x[0, 0, 0, :2] + 1e-4  # errors near eps, where a wrong gradient shows
    x_hat.requires_grad_(True)
    value, _ = DECODER_VARIANCES[f"{kind}_mle"](x, x_hat, torch.ones(1), None, None)
    (g,) = torch.autograd.grad(value.sum(), x_hat)
    e = (x - x_hat[0]).pow(2).flatten(1)  # (B, d)
    (g_ref,) = torch.autograd.grad(closed_form(e), x_hat)
    assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-12)


def test_iso_i_mle_closed_form_g5_and_stationarity():
    """G.5: the Iso-I objective is d/2 (1 + log 2 pi) + d/2 log E||x - mu||^2 - d/2 log d,
    and the estimate is where the NLL's derivative in sigma^2 vanishes."""
    x, x_hat, w = _recon_inputs(s=1, b=6)
    w = torch.ones(1)
    value, var = DECODER_VARIANCES["iso_i_mle"](x, x_hat, w, None, None)
    d = x[0].numel()
    mean_sq = ((x - x_hat[0]) ** 2).flatten(1).sum(-1).mean()
    g5 = d / 2 * (1 + math.log(2 * math.pi)) + d / 2 * torch.log(mean_sq) - d / 2 * math.log(d)
    assert value.mean().item() == pytest.approx(g5.item(), rel=1e-12)
    s2 = var.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_nll(x, x_hat, w, s2.expand_as(x_hat)).mean(), s2)
    assert abs(grad.item()) < 1e-9


def test_trainable_variance_is_the_gaussian_nll_at_exp_log_var():
    x, x_hat, w = _recon_inputs()
    log_var = torch.randn(1, 1, 2, 3)  # Diag-I shaped: one per pixel
    value, var = DECODER_VARIANCES["diag_i_trainable"](x, x_hat, w, log_var, None)
    assert torch.allclose(value, _nll(x, x_hat, w, torch.exp(log_var).expand_as(x_hat)))


# --- decoder regularizers ----------------------------------------------------------------

def test_gradient_penalty_on_a_linear_decoder_matches_closed_form_in_z():
    """RAE code: d ||D(z)||^2 / dz = 2 W^T (W z + b) for D(z) = W z + b."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 5)
    post = random_posterior(b=4, d=3, full=True)
    z = (post.mean[None] + 0.1 * torch.randn(2, 4, 3)).requires_grad_(True)  # (S, B, D)
    x_hat = lin(z)
    g = decoder_output_gradient(lin, z, x_hat)
    closed = 2 * (lin(z) @ lin.weight)  # 2 (W z + b)^T W, row-wise
    assert torch.allclose(g, closed.detach(), atol=1e-12)
    w = torch.tensor([0.3, 0.7])
    gp = gradient_penalty(g, w, post)
    expected = (w[:, None] * closed.pow(2).sum(-1)).sum(0)
    assert torch.allclose(gp, expected.detach())
    # the eigenvalue weighting: largest diagonal entry of Sigma (UAE Eq. 11)
    lam = torch.stack([post.covariance[b].diagonal().max() for b in range(4)])
    assert torch.allclose(eig_gradient_penalty(g, w, post), lam * gp)
    # the penalty is differentiable in the decoder weights (create_graph) ...
    assert torch.autograd.grad(gp.sum(), lin.weight)[0].abs().sum() > 0
    # ... and the same under no_grad, by decoding again
    with torch.no_grad():
        g2 = decoder_output_gradient(lin, z.detach())
    assert torch.allclose(g2, g.detach())


def test_the_uae_codes_decoder_penalty_on_a_linear_decoder_matches_closed_form():
    """UAE code: min(max_ij Sigma_ij, 100) ||d sum D(mu) / d mu||_2; for D(z) = W z + b the
    gradient is W^T 1 for every input, at the mean whatever the samples."""
    from models.decoder_regs import DECODER_PENALTIES
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 5)
    post = random_posterior(b=4, d=3, full=True)
    big = Posterior(post.mean, 20 * post.scale_tril)  # variances beyond the cap of 100
    pen = DECODER_PENALTIES["eig_gradient_norm_at_mean"]
    z = post.mean[None] + torch.randn(2, 4, 3)  # samples: not where the code differentiates
    for p, cap in ((post, False), (big, True)):
        g = pen.gradient(lin, z, lin(z), p)
        assert g.shape == (1, 4, 3)
        torch.testing.assert_close(g[0], lin.weight.sum(0).expand(4, 3).detach())
        lam = torch.stack([p.covariance[b].diagonal().max() for b in range(4)])
        assert (lam > 100).any() == cap
        expected = lam.clamp(max=100) * lin.weight.sum(0).norm()
        torch.testing.assert_close(pen.value(g, torch.ones(2) / 2, p), expected.detach())


def test_the_uae_codes_rae_gradient_norm_is_the_unsquared_norm_at_the_code():
    """UAE code's RAE "grad_norm": ||d sum D(z) / dz||_2 at z; for D(z) = W z + b: ||W^T 1||."""
    from models.decoder_regs import DECODER_PENALTIES
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 5)
    post = Posterior(torch.randn(4, 3), torch.zeros(4, 3, 3))  # a point posterior: z = mu
    value = DECODER_PENALTIES["gradient_norm_at_mean"](lin, lin, post.mean[None],
                                                       lin(post.mean[None]), post, torch.ones(1))
    expected = np.linalg.norm(lin.weight.detach().numpy().sum(0))
    np.testing.assert_allclose(value.detach().numpy(), np.full(4, expected), rtol=1e-12)
    # a nonlinear decoder: the norm of the autograd Jacobian's column sums at each code
    dec = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))
    value = DECODER_PENALTIES["gradient_norm_at_mean"](dec, dec, post.mean[None], None, post,
                                                       torch.ones(1))
    for b in range(4):
        jac = torch.autograd.functional.jacobian(dec, post.mean[b])  # (5, 3)
        assert value[b].item() == pytest.approx(jac.sum(0).norm().item(), rel=1e-10)


def test_the_uae_codes_weight_decay_is_the_sum_of_the_decoder_layers_spectral_norms():
    """UAE code's "weight_decay": sum over Linear / (transposed) conv layers of the largest
    singular value of W viewed as (W.shape[0], -1); numpy's SVD, and its gradient u1 v1^T."""
    from models.decoder_regs import DECODER_PENALTIES, spectral_norm_sum
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(4, 8 * 3 * 3), torch.nn.Unflatten(1, (8, 3, 3)),
                              torch.nn.BatchNorm2d(8),  # no weight matrix: not counted
                              torch.nn.ConvTranspose2d(8, 5, 4, stride=2, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(5, 2, 3, padding=1))
    layers = [dec[0], dec[3], dec[5]]
    expected = sum(np.linalg.svd(m.weight.detach().numpy().reshape(m.weight.shape[0], -1),
                                 compute_uv=False)[0] for m in layers)
    value = spectral_norm_sum(dec)
    assert value.item() == pytest.approx(expected, rel=1e-10)
    # called as every penalty is: the same for every input, whatever z
    post = random_posterior(b=3, d=4)
    assert DECODER_PENALTIES["spectral_norm_sum"](dec, dec, post.mean[None], None, post,
                                                  torch.ones(1)).item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(value, dec[0].weight)
    u, s, vt = np.linalg.svd(dec[0].weight.detach().numpy())
    np.testing.assert_allclose(grad.numpy(), np.outer(u[:, 0], vt[0]), atol=1e-10)


def _svd_top(w: torch.Tensor):
    u, s, vt = np.linalg.svd(w.detach().double().numpy().reshape(w.shape[0], -1))
    return s[0], np.outer(u[:, 0], vt[0])


def test_power_iteration_tracks_the_svds_spectral_norms_and_their_gradient_while_training():
    """spectral_norm_sum_power, RAE-L2-code's term, trained on the 8x8 digits (the weights
    moving under Adam), through the SVD warm-up and 100 power-iteration steps after it: at
    every step σ̂1 summed over the layers is numpy's to 1e-3, and each layer's gradient is the
    SVD's u1 v1^T in direction (cosine > 0.999) wherever σ1 stands 5% above σ2 (where the two
    nearly tie, the top pair's own gradient jumps between them); eval mode leaves the vectors
    as they are."""
    import models
    from sklearn.datasets import load_digits
    from models.decoder_regs import POWER_WARMUP_STEPS, SPECTRAL_STEP, SPECTRAL_U, _weighted
    torch.manual_seed(0)
    model = models.build("RAE-L2-code", (1, 8, 8))
    layers = _weighted(model.decoder)
    assert len(layers) >= 2 and all(hasattr(m, SPECTRAL_U) for m in layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.tensor(load_digits().images / 16.0,
                          dtype=next(model.parameters()).dtype)[:, None]
    draw = torch.Generator().manual_seed(0)
    steps, separated = POWER_WARMUP_STEPS + 100, 0
    for step in range(steps):
        model.train()
        terms = model.loss(images[torch.randint(0, len(images), (64,), generator=draw)])
        svds = [np.linalg.svd(m.weight.detach().double().numpy()) for m in layers]
        assert terms["decoder_reg"].item() == pytest.approx(sum(s[0] for _, s, _ in svds),
                                                            rel=1e-3), step
        grads = torch.autograd.grad(terms["decoder_reg"], [m.weight for m in layers],
                                    retain_graph=True)
        for g, (u, s, vt) in zip(grads, svds):
            if s[0] < 1.05 * s[1]:
                continue
            separated += 1
            g, outer = g.double().numpy(), np.outer(u[:, 0], vt[0])
            assert (g * outer).sum() / np.linalg.norm(g) / np.linalg.norm(outer) > 0.999, step
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert separated >= steps  # the direction was checked at least once a step on average
    assert all(getattr(m, SPECTRAL_STEP).item() == steps for m in layers)
    before = [getattr(m, SPECTRAL_U).clone() for m in layers]
    model.eval()
    with torch.no_grad():
        model.loss(images[:32])
    assert all(torch.equal(b, getattr(m, SPECTRAL_U)) for b, m in zip(before, layers))


def test_power_iteration_vectors_are_in_the_state_dict_so_resume_is_exact():
    """A model trained 4 steps, saved, rebuilt, loaded and trained 4 more ends bit-identical to
    one trained 8 steps: the persistent vectors travel in the state dict; and the model's
    parameters start exactly as with the SVD (the vectors' own generator)."""
    import models
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            model.loss(x)["loss"].backward()
            opt.step()

    torch.manual_seed(0)
    straight = models.build("RAE-L2-code", (1, 8, 8))
    torch.manual_seed(0)
    svd = models.build("RAE-L2-code", (1, 8, 8), decoder_reg="spectral_norm_sum")
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), svd.parameters()))
    opt = torch.optim.Adam(straight.parameters(), lr=1e-3)
    torch.manual_seed(0)
    first = models.build("RAE-L2-code", (1, 8, 8))
    opt1 = torch.optim.Adam(first.parameters(), lr=1e-3)
    train(straight, opt, 8)
    train(first, opt1, 4)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert any(k.endswith("spectral_u") for k in state)
    torch.manual_seed(123)  # another start: the loaded state must decide everything
    resumed = models.build("RAE-L2-code", (1, 8, 8))
    resumed.load_state_dict(state)
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-3)
    opt2.load_state_dict(opt1.state_dict())
    train(resumed, opt2, 4)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_rae_code_presets_compute_the_codes_loss():
    """RAE-L2-code: mse + 1e-4 mean ||z||_2 + 1e-6 sum_l ||W_l||_2 over the decoder."""
    import models
    from models.decoder_regs import spectral_norm_sum
    torch.manual_seed(0)
    model = models.build("RAE-L2-code", (1, 8, 8)).double()
    x = torch.rand(6, 1, 8, 8)
    terms = model.loss(x)
    z = model.posterior(x).mean
    assert terms["latent_reg"].item() == pytest.approx(z.norm(dim=-1).mean().item(), rel=1e-10)
    # by power iteration (models/decoder_regs.py), the SVD's value to 1e-3
    assert terms["decoder_reg"].item() == pytest.approx(spectral_norm_sum(model.decoder).item(),
                                                        rel=1e-3)
    expected = terms["recon"] + 1e-4 * terms["latent_reg"] + 1e-6 * terms["decoder_reg"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert models.PRESETS["RAE-GP-code"].decoder_reg == "gradient_norm_at_mean"
    assert models.PRESETS["RAE-code"].replace(name="x") == models.PRESETS["RAE"].replace(
        regularizer="l2_unsquared", name="x")


# --- codebooks ---------------------------------------------------------------------------

def test_vq_substitutes_nearest_code_with_straight_through_gradient():
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]], requires_grad=True)
    mu = torch.tensor([[0.9, 1.2], [-1.5, 0.2], [0.1, -0.1]], requires_grad=True)
    z_dec, terms = vector_quantized(mu, mu[None], codes)
    assert torch.equal(z_dec[0].detach(), codes.detach()[[1, 2, 0]])
    c = torch.randn(1, 3, 2)
    (g_mu,) = torch.autograd.grad((z_dec * c).sum(), mu)
    assert torch.allclose(g_mu, c[0])  # the decoder's gradient copied to the encoder
    # the codebook term moves only the codes, the commitment term only the encoder
    g_codes_cb, g_mu_cb = torch.autograd.grad(terms["codebook"].sum(), [codes, mu],
                                              allow_unused=True)
    assert g_mu_cb is None or not g_mu_cb.any()
    assert torch.allclose(g_codes_cb[1], 2 * (codes[1] - mu[0]).detach())
    g_codes_cm, g_mu_cm = torch.autograd.grad(terms["commitment"].sum(), [codes, mu],
                                              allow_unused=True)
    assert g_codes_cm is None or not g_codes_cm.any()
    assert torch.allclose(g_mu_cm[0], 2 * (mu[0] - codes[1]).detach())


def test_soft_codebook_leaves_z_unchanged_and_penalises_distance_to_nearest_code():
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    mu = torch.tensor([[0.9, 1.2], [0.1, -0.3]])
    z = mu[None] + 0.5
    z_dec, terms = soft_codebook(mu, z, codes)
    assert torch.equal(z_dec, z)
    assert torch.allclose(terms["codebook"], torch.tensor([0.01 + 0.04, 0.01 + 0.09]))
    assert torch.allclose(terms["commitment"], terms["codebook"])
