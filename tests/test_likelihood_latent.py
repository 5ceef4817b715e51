"""Tests of engine/eval/metrics/likelihood.py (the IWAE NLL bound) and engine/eval/metrics/latent.py
(latent variance, perceptual path length), against closed forms and independent numpy
computations on linear-Gaussian models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import models
from engine.eval.metrics import latent
from engine.eval.metrics.likelihood import NotComputable, iwae_nll, training_set_variance
from models.codebooks import nearest_code

SHAPE = (1, 2, 2)  # d_x = 4
DX, D = 4, 2
F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# A linear-Gaussian VAE: z ~ N(0, I), x = W z + b + N(0, s2 I), so p(x) = N(b, W W^T + s2 I)
# and p(z|x) = N(S W^T (x - b) / s2, S), S = (I + W^T W / s2)^-1.
# ---------------------------------------------------------------------------------------------

class AffineEncoder(nn.Module):
    """Raw posterior parameters [A x + c, tail]: an affine mean and a constant covariance."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, tail: torch.Tensor):
        super().__init__()
        self.a, self.c, self.tail = nn.Parameter(a), nn.Parameter(c), nn.Parameter(tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.flatten(1) @ self.a.T + self.c, self.tail.expand(len(x), -1)], 1)


def _problem(seed: int = 0, s2: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(DX, D, generator=g, dtype=F64)
    b = 0.5 * torch.randn(DX, generator=g, dtype=F64)
    cov_post = torch.linalg.inv(torch.eye(D, dtype=F64) + w.T @ w / s2)
    a = cov_post @ w.T / s2  # posterior mean = a x + c
    return dict(w=w, b=b, s2=s2, a=a, c=-a @ b, cov_post=cov_post)


def _marginal(p) -> torch.distributions.MultivariateNormal:
    return torch.distributions.MultivariateNormal(p["b"], p["w"] @ p["w"].T
                                                  + p["s2"] * torch.eye(DX, dtype=F64))


def _data(p, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(_marginal(p).covariance_matrix)
    return (p["b"] + torch.randn(n, DX, generator=g, dtype=F64) @ chol.T).view(n, *SHAPE)


def _model(p, posterior: str = "full", mean_shift: float = 0.0, var_scale: float = 1.0,
           dtype=F64, **cfg) -> models.GaussianAutoencoder:
    """The linear-Gaussian model with q = N(a x + c + shift, scale * cov_post) (the diagonal
    of it for posterior='diagonal'): the exact posterior for shift 0, scale 1, 'full'."""
    cfg = {"decoder_variance": "fixed", "sigma_x2": p["s2"], **cfg}
    m = models.build("VAE", SHAPE, latent_dim=D, arch="mlp", hidden=4, depth=1,
                     output="linear", posterior=posterior, **cfg)
    cov = var_scale * p["cov_post"]
    if posterior == "full":
        chol = torch.linalg.cholesky(cov)
        rows, cols = torch.tril_indices(D, D, offset=-1)
        tail = torch.cat([2 * chol.diagonal().log(), chol[rows, cols]])
    else:
        tail = cov.diagonal().log()
    m.encoder = AffineEncoder(p["a"].clone(), p["c"] + mean_shift, tail)
    m.decoder = nn.Linear(D, DX)
    m.decoder.weight.data, m.decoder.bias.data = p["w"].clone(), p["b"].clone()
    return m.to(dtype)


def _posterior_np(m, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The model's q(z|x) mean (N, D) and covariance (D, D) (constant in x), as numpy."""
    post = m.posterior(x.to(F64))
    return post.mean.detach().numpy(), post.covariance[0].detach().numpy()


def _logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    top = a.max(axis)
    return top + np.log(np.exp(a - top).sum(axis))


def _iwae_numpy(m, x: torch.Tensor, eps: np.ndarray, var_fn) -> float:
    """IWAE NLL computed independently: log q from the inverse covariance, Sigma_x from
    var_fn(err2 (k, N, d_x)) -> broadcastable variance."""
    p_w, p_b = m.decoder.weight.detach().numpy(), m.decoder.bias.detach().numpy()
    mu, cov = _posterior_np(m, x)
    chol = np.linalg.cholesky(cov)
    xf = x.flatten(1).numpy()
    z = mu + eps @ chol.T  # (k, N, D)
    err2 = (xf - (z @ p_w.T + p_b)) ** 2  # (k, N, d_x)
    var = var_fn(err2)
    log_lik = -0.5 * (err2 / var + np.log(2 * np.pi * var)).sum(-1)
    log_prior = -0.5 * (z ** 2).sum(-1) - 0.5 * D * np.log(2 * np.pi)
    diff = z - mu
    maha = np.einsum("kni,ij,knj->kn", diff, np.linalg.inv(cov), diff)
    log_q = -0.5 * maha - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
    log_w = log_lik + log_prior - log_q
    return float(-(_logsumexp(log_w) - np.log(len(eps))).mean())


# ---------------------------------------------------------------------------------------------
# IWAE NLL
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(F64, 1e-9), (torch.float32, 2e-4)])
@pytest.mark.parametrize("k", [1, 7])
def test_exact_posterior_gives_the_exact_marginal_for_any_k(dtype, atol, k):
    # with q = p(z|x) (full covariance, off-diagonal L) every weight is p(x): L_k = log p(x)
    p = _problem()
    x = _data(p, 64)
    exact = -_marginal(p).log_prob(x.flatten(1)).mean().item()
    out = iwae_nll(_model(p, dtype=dtype), x.to(dtype), k=k, batch_size=25)
    assert out["nll"] == pytest.approx(exact, abs=atol)
    assert out["nll_bpd"] == pytest.approx(out["nll"] / (DX * math.log(2)), rel=1e-12)


def test_wrong_posterior_bound_is_above_and_tightens_with_k():
    p = _problem()
    x = _data(p, 300)
    exact = -_marginal(p).log_prob(x.flatten(1)).mean().item()
    m = _model(p, posterior="diagonal", mean_shift=0.4, var_scale=2.0)
    nll = [iwae_nll(m, x, k=k, batch_size=100)["nll"] for k in (1, 10, 300)]
    assert nll[0] > nll[1] > nll[2] > exact
    assert nll[2] - exact < 0.05 * (nll[0] - exact)  # close to log p(x) at large k


@pytest.mark.parametrize("kind", ["iso_d_mle", "diag_d_mle"])
def test_input_dependent_mle_matches_numpy_over_chunks(kind):
    # Sigma_x(x) = E_q[(x - mu(z))^2] over the same k draws (G.7 / G.15), + 1e-6
    p = _problem()
    x = _data(p, 20)
    m = _model(p, posterior="diagonal", mean_shift=0.2, var_scale=1.5, decoder_variance=kind)
    k, seed = 50, 3
    eps = torch.randn((k, len(x), D), generator=torch.Generator().manual_seed(seed), dtype=F64)
    if kind == "iso_d_mle":
        def var_fn(e2):
            return e2.mean((0, 2))[:, None] + 1e-6
    else:
        def var_fn(e2):
            return e2.mean(0) + 1e-6
    expected = _iwae_numpy(m, x, eps.numpy(), var_fn)
    whole = iwae_nll(m, x, k=k, batch_size=len(x), seed=seed)["nll"]
    chunked = iwae_nll(m, x, k=k, batch_size=len(x), seed=seed,
                       chunk_elements=7 * len(x) * DX)["nll"]  # 7 draws per decoder call
    assert whole == pytest.approx(expected, abs=1e-9)
    assert chunked == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("kind", ["iso_i_mle", "diag_i_mle"])
def test_input_independent_mle_is_the_training_set_estimate(kind):
    p = _problem()
    train, test = _data(p, 40, seed=5), _data(p, 30, seed=6)
    m = _model(p, posterior="diagonal", mean_shift=0.2, var_scale=1.5, decoder_variance=kind)
    var = training_set_variance(m, train, draws=3, seed=2, batch_size=16)
    # numpy: E_{data, q}[(x - mu(z))^2] with the documented draws, per batch randn((3, B, D))
    gen = torch.Generator().manual_seed(2)
    err2 = []
    for i in range(0, len(train), 16):
        xb = train[i:i + 16]
        eps = torch.randn((3, len(xb), D), generator=gen, dtype=F64).numpy()
        mu, cov = _posterior_np(m, xb)
        z = mu + eps @ np.linalg.cholesky(cov).T
        err2.append(((xb.flatten(1).numpy() - (z @ p["w"].numpy().T + p["b"].numpy())) ** 2)
                    .reshape(-1, DX))
    per_pixel = np.concatenate(err2).mean(0)  # G.11
    expected = per_pixel.mean() if kind == "iso_i_mle" else per_pixel + 1e-6  # G.4 / G.11
    np.testing.assert_allclose(var.flatten().numpy(), np.broadcast_to(expected, var.numel()),
                               rtol=1e-12)
    # the NLL is that of the same model with Sigma_x held at this estimate
    nll = iwae_nll(m, test, k=20, batch_size=16, train_images=train, train_draws=3, seed=2)
    if kind == "iso_i_mle":
        ref = _model(p, posterior="diagonal", mean_shift=0.2, var_scale=1.5,
                     sigma_x2=float(expected))
    else:
        ref = _model(p, posterior="diagonal", mean_shift=0.2, var_scale=1.5,
                     decoder_variance="diag_i_trainable")
        ref.log_variance.log_var.data = var.log().view(SHAPE)
    assert nll["nll"] == pytest.approx(iwae_nll(ref, test, k=20, batch_size=16, seed=2)["nll"],
                                       abs=1e-10)


@pytest.mark.parametrize("kind", ["iso_i_trainable", "diag_i_trainable", "iso_d_trainable",
                                  "diag_d_trainable"])
def test_trainable_variance_is_used_per_draw(kind):
    # log Sigma_x set to log s2 everywhere: the same bound as the fixed-variance model
    p = _problem()
    x = _data(p, 30)
    m = _model(p, posterior="diagonal", mean_shift=0.3, decoder_variance=kind)
    lv = m.log_variance
    if lv.head is None:
        lv.log_var.data.fill_(math.log(p["s2"]))
    else:
        lv.head.bias.data.fill_(math.log(p["s2"]))
    fixed = _model(p, posterior="diagonal", mean_shift=0.3)
    assert iwae_nll(m, x, k=9)["nll"] == pytest.approx(iwae_nll(fixed, x, k=9)["nll"], abs=1e-10)


def test_trainable_dependent_variance_matches_numpy():
    # a non-constant head: Sigma_x(z_i) = exp(H z_i + h) per draw and pixel
    p = _problem()
    x = _data(p, 15)
    m = _model(p, posterior="diagonal", mean_shift=0.3, decoder_variance="diag_d_trainable")
    h = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.0, 0.3]], dtype=F64)
    m.log_variance.head.weight.data, m.log_variance.head.bias.data = h, torch.full((DX,), -1.0,
                                                                                    dtype=F64)
    eps = torch.randn((11, len(x), D), generator=torch.Generator().manual_seed(0), dtype=F64)
    mu, cov = _posterior_np(m, x)
    z = mu + eps.numpy() @ np.linalg.cholesky(cov).T
    var = np.exp(z @ h.numpy().T - 1.0)  # (k, N, d_x)
    expected = _iwae_numpy(m, x, eps.numpy(), lambda e2: var)
    assert iwae_nll(m, x, k=11, batch_size=15)["nll"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name, overrides, needle", [
    ("VAE", {}, "decoder_variance='mse'"),
    ("MVU-AE", {}, "decoder_variance='sse'"),
    ("AE", {"decoder_variance": "fixed"}, "posterior='point'"),
    ("VQ-VAE", {"decoder_variance": "fixed"}, "codebook='vq'"),
])
def test_not_computable_says_why_in_one_line(name, overrides, needle):
    m = models.build(name, (1, 4, 4), latent_dim=2, arch="mlp", hidden=8, codebook_size=4,
                     **overrides)
    with pytest.raises(NotComputable) as err:
        iwae_nll(m, torch.rand(3, 1, 4, 4), k=2)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_input_independent_mle_needs_train_images():
    p = _problem()
    m = _model(p, posterior="diagonal", decoder_variance="iso_i_mle")
    with pytest.raises(ValueError, match="train_images"):
        iwae_nll(m, _data(p, 4), k=2)


def test_nll_is_seeded_and_restores_training_mode():
    p = _problem()
    x = _data(p, 20)
    m = _model(p, posterior="diagonal", mean_shift=0.4, var_scale=2.0)
    m.train()
    a, b = iwae_nll(m, x, k=5, seed=1)["nll"], iwae_nll(m, x, k=5, seed=1)["nll"]
    assert a == b and a != iwae_nll(m, x, k=5, seed=2)["nll"]
    assert m.training


# ---------------------------------------------------------------------------------------------
# Latent variance
# ---------------------------------------------------------------------------------------------

def test_latent_variance_matches_numpy():
    torch.manual_seed(0)
    m = models.build("VAE", (1, 4, 4), latent_dim=3, arch="mlp", hidden=16)
    x = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    out = latent.latent_variance(m, x, batch_size=7)
    m.eval()
    with torch.no_grad():
        post = m.posterior(x)
    mu = post.mean.double().numpy()
    var = np.var(mu, axis=0, ddof=1)
    assert out["latent_var"] == pytest.approx(var.sum(), rel=1e-6)  # float32 batches
    assert out["latent_var_per_dim"] == pytest.approx(var.mean(), rel=1e-6)
    sig2 = post.scale_tril.diagonal(dim1=-2, dim2=-1).double().numpy() ** 2
    assert out["latent_posterior_var"] == pytest.approx(sig2.sum(1).mean(), rel=1e-6)


def test_latent_variance_of_vq_is_that_of_the_codes():
    torch.manual_seed(0)
    m = models.build("VQ-VAE", (1, 4, 4), latent_dim=3, arch="mlp", hidden=16, codebook_size=5)
    m.codebook.data = torch.randn(5, 3)
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    m.eval()
    with torch.no_grad():
        mu = m.posterior(x).mean.numpy()
    codes = m.codebook.detach().numpy()
    zq = codes[((mu[:, None] - codes[None]) ** 2).sum(-1).argmin(1)]  # MVU-AE Eq. 16
    out = latent.latent_variance(m, x)
    assert out["latent_var"] == pytest.approx(np.var(zq.astype(np.float64), 0, ddof=1).sum(),
                                              rel=1e-6)
    assert out["latent_posterior_var"] == 0.0


# ---------------------------------------------------------------------------------------------
# Perceptual path length
# ---------------------------------------------------------------------------------------------

def _np_filtered_mean(d: np.ndarray) -> float:
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    return float(d[(lo <= d) & (d <= hi)].mean())


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1001])
def test_filtered_mean_matches_numpy_percentiles(n):
    rng = np.random.default_rng(n)
    d = rng.exponential(size=n)
    d[: n // 10] = 1e6  # outliers
    d[n // 2:] = np.round(d[n // 2:], 1)  # ties
    assert latent.filtered_mean(torch.from_numpy(d)) == pytest.approx(_np_filtered_mean(d),
                                                                      rel=1e-12)


def test_filtered_mean_drops_known_outliers():
    d = torch.arange(1, 201, dtype=F64)  # 1..200: P1 ("lower") = 2, P99 ("higher") = 199
    assert latent.filtered_mean(d) == pytest.approx(np.arange(2, 200).mean())


def _linear_decoder_model(w: torch.Tensor, **cfg) -> models.GaussianAutoencoder:
    m = models.build("AE", (1, 3, 3), latent_dim=w.shape[1], arch="mlp", hidden=4, depth=1,
                     output="linear", **cfg)
    m.decoder = nn.Linear(w.shape[1], 9)
    m.decoder.weight.data = w.clone().float()
    m.decoder.bias.data = torch.linspace(-1, 1, 9)
    return m.double()


def _sq_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).sum(1)


def _np_slerp(a, b, t):
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    om = np.arccos(np.clip((an * bn).sum(1), -1, 1))[:, None]
    t = t[:, None]
    return (np.sin((1 - t) * om) * a + np.sin(t * om) * b) / np.sin(om)


def _np_slerp_unit(a, b, t):  # StyleGAN's, written from its definition: the great-circle arc
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return _np_slerp(an, bn, t)


_W = torch.tensor(np.random.default_rng(0).normal(size=(9, 3)))


def _sources():
    pool = torch.randn(12, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    return {"prior": None, "tensor": pool,
            "sampler": lambda n, seed: torch.randn(n, 3, generator=torch.Generator()
                                                   .manual_seed(seed))}


def test_ppl_lerp_of_a_linear_decoder_is_the_closed_form():
    # lerp: G(z(t + eps)) - G(z(t)) = eps W (z2 - z1), so each term is ||W (z2 - z1)||^2
    m = _linear_decoder_model(_W)
    out = latent.perceptual_path_length(m, 500, _sq_l2, interpolation="lerp", seed=5,
                                        batch_size=64)
    z1, z2, _ = latent.path_samples(500, 3, None, seed=5, dtype=F64)
    per_pair = (((z2 - z1).numpy() @ _W.numpy().T) ** 2).sum(1)
    assert out["ppl"] == pytest.approx(_np_filtered_mean(per_pair), rel=1e-6)


@pytest.mark.parametrize("interpolation, np_path", [("slerp", _np_slerp),
                                                    ("slerp_unit", _np_slerp_unit)])
@pytest.mark.parametrize("source", ["prior", "tensor", "sampler"])
def test_ppl_slerp_matches_numpy(interpolation, np_path, source):
    m = _linear_decoder_model(_W)
    latents, eps = _sources()[source], 1e-3
    out = latent.perceptual_path_length(m, 400, _sq_l2, epsilon=eps, latents=latents, seed=7,
                                        batch_size=64, interpolation=interpolation)
    z1, z2, t = (v.numpy() for v in latent.path_samples(400, 3, latents, seed=7, dtype=F64))
    w = _W.numpy()
    step = np_path(z1, z2, t + eps) @ w.T - np_path(z1, z2, t) @ w.T
    assert out["ppl"] == pytest.approx(_np_filtered_mean((step ** 2).sum(1) / eps ** 2),
                                       rel=1e-6)


def test_slerp_paths():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    zero, one = torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)
    torch.testing.assert_close(latent.slerp(a, b, zero), a)
    torch.testing.assert_close(latent.slerp(a, b, one), b)
    b_eq = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # |a| = |b|
    mid = latent.slerp(a, b_eq, torch.full((5,), 0.3, dtype=F64))
    torch.testing.assert_close(mid.norm(dim=1), a.norm(dim=1))
    # parallel ends: no NaN, the linear path
    torch.testing.assert_close(latent.slerp(a, 2 * a, torch.full((5,), 0.5, dtype=F64)), 1.5 * a)
    assert torch.allclose(latent.slerp_unit(a, b, one).norm(dim=1), one)


def test_path_samples_pairs_are_distinct_rows():
    pool = torch.arange(6, dtype=F64)[:, None].expand(6, 2)
    z1, z2, t = latent.path_samples(1000, 2, pool, seed=0, dtype=F64)
    assert (z1[:, 0] != z2[:, 0]).all() and set(z1[:, 0].tolist()) == set(range(6))
    assert ((0 <= t) & (t < 1)).all()
    _, _, t_end = latent.path_samples(10, 2, pool, sampling="end")
    assert (t_end == 0).all()


def test_ppl_of_vq_model_decodes_codes():
    torch.manual_seed(0)
    m = models.build("VQ-VAE", (1, 4, 4), latent_dim=2, arch="mlp", hidden=8, codebook_size=3)
    m.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0]])
    z1, z2, t = latent.path_samples(50, 2, None, seed=1)
    d = latent.path_distances(m, z1, z2, t, _sq_l2, interpolation="lerp")
    m.eval()
    with torch.no_grad():
        g0 = m.decode(nearest_code(latent.lerp(z1, z2, t), m.codebook))
        g1 = m.decode(nearest_code(latent.lerp(z1, z2, t + 1e-4), m.codebook))
    torch.testing.assert_close(d, _sq_l2(g0, g1).double() / 1e-8)


def test_table4_interpolates_encoded_test_images():
    torch.manual_seed(0)
    m = models.build("MVU-AE", (1, 4, 4), latent_dim=3, arch="mlp", hidden=16, codebook_size=4)
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    out = latent.table4(m, x, _sq_l2, n=200, seed=3, batch_size=64)
    assert out["latent_var"] == latent.latent_variance(m, x)["latent_var"]
    z, _ = latent.encoded_latents(m, x)
    ppl = latent.perceptual_path_length(m, 200, _sq_l2, latents=z, seed=3, batch_size=64)
    assert out["ppl"] == ppl["ppl"] and math.isfinite(out["ppl"]) and out["ppl"] > 0


def test_decoder_variance_map_keeps_each_channel_of_a_trainable_variance():
    """Diag-I trainable on 3-channel images: the map is exp(log Σx) per channel and pixel for
    every image (an average over the first axis would mix the channels)."""
    from engine.eval.metrics.likelihood import decoder_variance_map
    torch.manual_seed(0)
    model = models.build(models.PRESETS["Diag-I-trainable"], (3, 8, 8))
    with torch.no_grad():
        model.log_variance.log_var.copy_(torch.randn(3, 8, 8))
    images = torch.rand(5, 3, 8, 8)
    var = decoder_variance_map(model, images, draws=4, batch_size=2)
    assert var.shape == (5, 3, 8, 8)
    expected = torch.exp(model.log_variance.log_var.detach().double())
    torch.testing.assert_close(var, expected.expand(5, 3, 8, 8))
