"""Tests of models/density.py (the ex-post latent densities and fit_density) and of
GaussianAutoencoder.density_latents, against closed forms and independent computations."""
from __future__ import annotations

import pytest
import torch

import models
from models import Config
from models.density import DENSITIES, SecondStage, fit_density, second_stage_config
from models.samplers import sigma_points

TINY = dict(hidden=32)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _model(preset: str, **overrides) -> models.GaussianAutoencoder:
    torch.manual_seed(0)
    return models.build(preset, (1, 8, 8), **{**TINY, **overrides})


# ---------------------------------------------------------------------------------------------
# "prior": N(0, I)
# ---------------------------------------------------------------------------------------------

def test_prior_is_standard_normal_and_seeded():
    model = _model("VAE", latent_dim=6)
    dens = fit_density(model, _images(20), density="prior")
    z = dens.sample(20000, seed=3)
    assert z.shape == (20000, 6) and z.dtype == torch.float32
    # standard errors: mean 1/sqrt(n) = 0.007, covariance entries <= sqrt(2/n) = 0.01
    assert z.mean(0).abs().max() < 0.05
    cov = torch.cov(z.T)
    torch.testing.assert_close(cov, torch.eye(6), atol=0.06, rtol=0)
    assert torch.equal(z, dens.sample(20000, seed=3))
    assert not torch.allclose(z[:100], dens.sample(100, seed=4))
    # the prior ignores the data it is "fitted" on
    other = fit_density(model, _images(20, seed=1) * 0.5, density="prior")
    assert torch.equal(other.sample(20000, seed=3), z)


# ---------------------------------------------------------------------------------------------
# "gmm": scikit-learn's full-covariance mixture
# ---------------------------------------------------------------------------------------------

# explicit dtype: module constants are built at collection, when another test module may
# have changed torch's default dtype
TRUE_MEANS = torch.tensor([[-5.0, 0.0], [5.0, 0.0]], dtype=torch.float32)
TRUE_COVS = torch.tensor([[[0.25, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 1.0]]],
                         dtype=torch.float32)


def _two_clusters(n_per: int = 600, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parts = []
    for mean, cov in zip(TRUE_MEANS, TRUE_COVS):
        L = torch.linalg.cholesky(cov)
        parts.append(mean + torch.randn(n_per, 2, generator=g) @ L.T)
    return torch.cat(parts)  # grouped: cluster 0 then cluster 1


def test_gmm_recovers_a_known_two_component_mixture():
    cfg = Config(latent_dim=2, gmm_components=2)
    dens = DENSITIES["gmm"](_two_clusters(), cfg, 0)
    z = dens.sample(6000, seed=1)
    assert z.shape == (6000, 2) and z.dtype == torch.float32
    left, right = z[z[:, 0] < 0], z[z[:, 0] >= 0]
    # equal weights: 3000 +- 39 (one standard deviation) per side
    assert abs(len(left) - 3000) < 250
    for part, mean, cov in zip((left, right), TRUE_MEANS, TRUE_COVS):
        torch.testing.assert_close(part.mean(0), mean, atol=0.15, rtol=0)
        torch.testing.assert_close(torch.cov(part.T), cov, atol=0.15, rtol=0)
    # a single N(0, I) or a single Gaussian on the pooled data would have no gap at x = 0
    assert ((z[:, 0] > -2) & (z[:, 0] < 2)).float().mean() < 0.01


def test_gmm_samples_are_shuffled_and_seeded():
    dens = DENSITIES["gmm"](_two_clusters(), Config(latent_dim=2, gmm_components=2), 0)
    z = dens.sample(1000, seed=5)
    head = z[:50, 0]
    # sklearn's sample() returns the draws grouped by component; a fair prefix has both
    assert (head < 0).any() and (head > 0).any()
    assert torch.equal(z, dens.sample(1000, seed=5))
    assert not torch.equal(z, dens.sample(1000, seed=6))
    # the same draws for a seed regardless of earlier calls (sample resets its random state)
    dens.sample(7, seed=9)
    assert torch.equal(z, dens.sample(1000, seed=5))


def test_gmm_needs_at_least_as_many_latents_as_components():
    cfg = Config(latent_dim=2, gmm_components=10)
    with pytest.raises(ValueError, match="gmm_components"):
        DENSITIES["gmm"](_two_clusters(n_per=4), cfg, 0)  # 8 latents < 10 components
    # through fit_density: one latent per image, so 5 images cannot fit 10 components
    model = _model("AE", latent_dim=2, gmm_components=10)
    with pytest.raises(ValueError, match="gmm_components"):
        fit_density(model, _images(5))
    assert DENSITIES["gmm"](_two_clusters(n_per=5), cfg, 0).sample(3).shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# "second_stage": Dai & Wipf's second VAE with a learned gamma
# ---------------------------------------------------------------------------------------------

def test_second_stage_config_is_dai_wipf():
    cfg = Config(latent_dim=5, second_stage_hidden=48, second_stage_depth=4, lr=3e-4,
                 batch_size=32)
    s2 = second_stage_config(cfg)
    assert s2.decoder_variance == "iso_i_trainable"  # one learned log gamma
    assert s2.output == "linear" and s2.arch == "mlp_skip"  # their concat before the output
    assert (s2.latent_dim, s2.hidden, s2.depth) == (5, 48, 4)
    assert (s2.posterior, s2.sampling, s2.regularizer, s2.beta) == ("diagonal", "reparam", "kl", 1.0)
    assert (s2.lr, s2.batch_size) == (3e-4, 32)


def _second_stage(data: torch.Tensor, seed: int = 0, **cfg) -> SecondStage:
    base = dict(latent_dim=data.shape[1], second_stage_hidden=64, second_stage_depth=2)
    return DENSITIES["second_stage"](data, Config(**{**base, **cfg}), seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_second_stage_learns_a_shifted_gaussian(seed):
    # N(m, s^2 I) with s^2 = 4 above the initial gamma = 1, so the latent is used from the
    # first epochs (with s^2 < gamma a short run collapses to the mean; see the next test).
    m, s = 3.0, 2.0
    data = m + s * torch.randn(2000, 2, generator=torch.Generator().manual_seed(10 + seed))
    dens = _second_stage(data, seed, second_stage_epochs=10, lr=3e-3)
    z = dens.sample(5000, seed=1)
    assert z.shape == (5000, 2)
    # N(0, I) fails the mean, a collapsed model (all mass at the mean) fails the spread
    assert (z.mean(0) - m).abs().max() < 0.5, z.mean(0)
    std = z.std(0)
    assert ((std > 0.75) & (std < 3.0)).all(), std
    assert torch.equal(z, dens.sample(5000, seed=1))
    assert not torch.equal(z, dens.sample(5000, seed=2))


def test_second_stage_mean_and_learned_gamma_on_narrow_latents():
    m, s = 3.0, 0.5
    data = m + s * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    dens = _second_stage(data, 0, second_stage_epochs=5, lr=1e-2)
    z = dens.sample(5000, seed=0)
    assert (z.mean(0) - m).abs().max() < 0.5, z.mean(0)
    # gamma = exp(log gamma) starts at 1 and is trained down towards the data's variance
    log_var = dens.vae.log_variance.log_var
    assert log_var.numel() == 1
    assert log_var.exp().item() < 0.8


def test_second_stage_samples_spread_around_f_u_by_gamma_z():
    # Dai & Wipf Sec. 4 step 3: z ~ N(f(u), gamma_z I); the mean f(u) alone has no spread
    d, n, gamma = 3, 40000, 0.09
    dens = _second_stage(torch.randn(64, d), 0, second_stage_epochs=0)
    with torch.no_grad():
        dens.vae.log_variance.log_var.fill_(torch.log(torch.tensor(gamma)))
    z = dens.sample(n, seed=3)
    gen = torch.Generator().manual_seed(3)  # the u that sample() drew first
    u = torch.randn(n, d, generator=gen)
    with torch.no_grad():
        residual = z - dens.vae.eval().decode(u)  # (n, D)
    assert residual.mean(0).abs().max() < 4 * gamma ** 0.5 / n ** 0.5
    # the variance of n normal draws is within 4 standard errors, sqrt(2/n) relative
    assert ((residual.var(0) / gamma - 1).abs() < 4 * (2 / n) ** 0.5).all(), residual.var(0)
    assert abs(dens.gamma() - gamma) < 1e-6
    # across dimensions the noise is independent: the covariance is gamma I
    cov = torch.cov(residual.T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 4 * gamma / n ** 0.5


def test_the_second_stages_networks_see_their_input_beside_the_last_hidden_layer():
    from models.networks import build_decoder, build_encoder
    d, hidden, depth = 4, 16, 2
    enc = build_encoder("mlp_skip", (d,), 2 * d, hidden=hidden, depth=depth)
    dec = build_decoder("mlp_skip", (d,), d, output="linear", hidden=hidden, depth=depth)
    # parameters: depth hidden layers, then an output layer on (input, last hidden)
    inner = d * hidden + hidden + (depth - 1) * (hidden * hidden + hidden)
    assert sum(p.numel() for p in enc.parameters()) == inner + (d + hidden) * 2 * d + 2 * d
    assert sum(p.numel() for p in dec.parameters()) == inner + (d + hidden) * d + d
    # with the hidden path shut (its last layer zero), the output is still the input's
    # affine map: the skip, whose weights are the first d columns of the output layer
    skip = dec[0]
    with torch.no_grad():
        skip.body[-2].weight.zero_()
        skip.body[-2].bias.zero_()
    u = torch.randn(5, d)
    w, b = skip.out.weight[:, :d], skip.out.bias
    torch.testing.assert_close(dec(u), u @ w.T + b)


def test_the_second_stage_trains_on_a_fresh_draw_each_epoch():
    asked = []

    def redraw(k):
        asked.append(k)
        return torch.randn(50, 2, generator=torch.Generator().manual_seed(k))

    cfg = Config(latent_dim=2, second_stage_hidden=8, second_stage_depth=1, second_stage_epochs=4)
    DENSITIES["second_stage"](redraw(0), cfg, 0, redraw)
    assert asked == [0, 1, 2, 3]  # epoch 0 on the latents given (draw 0), then draws 1, 2, 3


@pytest.mark.parametrize("preset, fresh", [("VAE", True), ("AE", False)])
def test_fit_densitys_redraws_are_fresh_draws_of_q_z_given_x(preset, fresh):
    model = _model(preset, latent_dim=3)
    x = _images(40)
    redraw = models.redraw_latents(model, x, seed=2)
    torch.testing.assert_close(redraw(0), models.draw_latents(model, x, seed=2), rtol=0, atol=0)
    assert torch.equal(redraw(1), redraw(1))  # reproducible
    # a VAE's draws differ (z = mu + sigma eps); a deterministic encoder's are its mean
    assert torch.equal(redraw(0), redraw(1)) is not fresh
    if fresh:  # and draw 1 of seed 2 is not draw 0 of seed 3
        assert not torch.equal(redraw(1), models.redraw_latents(model, x, seed=3)(0))


def test_second_stage_is_reproducible_per_seed():
    data = 1.0 + torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    a = _second_stage(data, 4, second_stage_epochs=2, second_stage_hidden=16).sample(50, seed=0)
    torch.manual_seed(123)  # the global stream must not matter
    b = _second_stage(data, 4, second_stage_epochs=2, second_stage_hidden=16).sample(50, seed=0)
    c = _second_stage(data, 5, second_stage_epochs=2, second_stage_hidden=16).sample(50, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fit_density_second_stage_on_a_model():
    model = _model("2-Stage-VAE", latent_dim=4, second_stage_hidden=32, second_stage_depth=1,
                   second_stage_epochs=1)
    dens = fit_density(model, _images(64), seed=0)  # the preset's density
    assert isinstance(dens, SecondStage)
    assert dens.vae.input_shape == (4,) and dens.vae.cfg.latent_dim == 4
    assert dens.sample(10).shape == (10, 4)


# ---------------------------------------------------------------------------------------------
# fit_density: reproducibility, side effects, what it fits on
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["VAE", "UT-VAE*"])  # random draws / random sigma points
def test_fit_density_is_reproducible_per_seed(preset):
    model = _model(preset, latent_dim=2, gmm_components=3)
    x = _images(60)
    torch.manual_seed(1)
    a = fit_density(model, x, seed=7).sample(200, seed=0)
    torch.manual_seed(2)  # the global stream must not matter
    b = fit_density(model, x, seed=7).sample(200, seed=0)
    c = fit_density(model, x, seed=8).sample(200, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("training", [True, False])
def test_fit_density_restores_the_training_mode(training):
    model = _model("VAE", latent_dim=2, gmm_components=2)
    model.train(training)
    fit_density(model, _images(20))
    assert all(m.training is training for m in model.modules())


@pytest.mark.parametrize("density", [
    "prior",
    "gmm",
    "second_stage",
])
def test_fit_density_leaves_the_global_rng_alone(density):
    model = _model("VAE", latent_dim=2, gmm_components=2, second_stage_hidden=16,
                   second_stage_depth=1, second_stage_epochs=1)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    fit_density(model, _images(20), seed=5, density=density)
    assert torch.equal(torch.get_rng_state(), before)


def test_fit_density_fits_on_one_latent_per_image_in_order(monkeypatch):
    seen = {}

    def capture(latents, cfg, seed, redraw=None):
        seen.update(latents=latents, cfg=cfg, seed=seed)
        return DENSITIES["prior"](latents, cfg, seed)

    monkeypatch.setitem(DENSITIES, "capture", capture)
    model = _model("AE", latent_dim=3)
    model.train()
    x = _images(23)
    fit_density(model, x, seed=11, density="capture", batch_size=5)  # batches of 5, 5, .., 3
    assert seen["cfg"] is model.cfg and seen["seed"] == 11
    model.eval()
    with torch.no_grad():  # the same batches, in order, in eval mode
        expected = torch.cat([model.encode(x[i:i + 5])[0] for i in range(0, 23, 5)])
    assert seen["latents"].shape == (23, 3)
    assert torch.equal(seen["latents"], expected)


# ---------------------------------------------------------------------------------------------
# density_latents: one latent per input, drawn as in training
# ---------------------------------------------------------------------------------------------

def test_density_latents_of_a_mean_preset_is_the_encoder_mean():
    model = _model("AE").eval()
    x = _images(17)
    with torch.no_grad():
        mu = model.encode(x)[0]
    z = model.density_latents(x)
    assert z.shape == (17, model.cfg.latent_dim)
    assert torch.equal(z, mu)


def test_density_latents_of_ut_vae_are_sigma_points():
    model = _model("UT-VAE*", latent_dim=4).eval()
    d = model.cfg.latent_dim
    x = _images(300)
    with torch.no_grad():
        mean, tril = model.encode(x)
        points, _ = sigma_points(mean, tril, model.cfg.kappa)  # (2D+1, B, D)
    torch.manual_seed(0)
    z = model.density_latents(x)
    assert z.shape == (300, d)
    dist = (points - z[None]).abs().amax(-1)  # (2D+1, B)
    assert (dist.min(0).values == 0).all()
    # each input draws one of its 2D+1 = 9 points uniformly: all of them occur, and the
    # centre (= the mean) is not what is returned for most inputs
    which = dist.argmin(0)
    assert set(which.tolist()) == set(range(2 * d + 1))
    assert (which == 0).float().mean() < 0.25
    assert not torch.equal(z, mean)


def test_density_latents_of_a_reparam_vae_are_draws_from_the_posterior():
    model = _model("VAE", latent_dim=3).eval()
    x = _images(1).expand(4000, 1, 8, 8)
    with torch.no_grad():
        mean, tril = model.encode(x[:1])
    sigma = tril[0].diagonal()
    torch.manual_seed(0)
    z = model.density_latents(x)
    # standard errors: sigma / sqrt(4000) = 0.016 sigma for the mean, 0.011 sigma for the std
    assert ((z.mean(0) - mean[0]).abs() < 0.1 * sigma).all()
    assert ((z.std(0) / sigma - 1).abs() < 0.1).all()


def test_density_latents_of_vq_vae_are_the_nearest_codes():
    model = _model("VQ-VAE", latent_dim=4, codebook_size=32).eval()
    x = _images(100)
    with torch.no_grad():
        mu = model.encode(x)[0]
    codes = model.codebook.detach()
    nearest = ((mu[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)  # (B,)
    z = model.density_latents(x)
    # Every latent is a codebook row. Not bit-exact: the straight-through z + (z_q - z)
    # rounds to within an ulp of z (see the report); codes are ~1e-2 apart.
    torch.testing.assert_close(z, codes[nearest], atol=1e-6, rtol=0)
    assert len(set(nearest.tolist())) > 1
