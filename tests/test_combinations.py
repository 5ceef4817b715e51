"""Every combination of the axes: valid ones train (finite loss, gradients reach every
parameter, the expected terms present); invalid ones are refused with a clear message."""
from __future__ import annotations

import itertools

import pytest
import torch

import models
from models import Config, ConfigError
from models import config as C

X_SHAPE = (1, 4, 4)  # a tiny MLP autoencoder keeps thousands of combinations fast
SMALL = dict(latent_dim=3, hidden=8, codebook_size=4, num_samples=2)


def _combos():
    return itertools.product(*(C.AXES[axis] for axis in
                               ("regularizer", "decoder_reg", "decoder_variance", "codebook")))


@pytest.mark.parametrize("posterior,sampling",
                         list(itertools.product(C.AXES["posterior"], C.AXES["sampling"])))
def test_every_valid_combination_trains(posterior, sampling):
    x = torch.rand(4, *X_SHAPE)
    built = refused = 0
    failures = []
    for reg, dreg, var, code in _combos():
        fields = dict(SMALL, posterior=posterior, sampling=sampling, regularizer=reg,
                      decoder_reg=dreg, decoder_variance=var, codebook=code, gamma=0.1)
        if sampling in ("unscented_all", "mean"):
            fields["num_samples"] = 1
        try:
            cfg = Config(**fields)
        except ConfigError:
            refused += 1
            continue
        built += 1
        torch.manual_seed(0)
        model = models.build(cfg, X_SHAPE)
        out = model.loss(x)
        out["loss"].backward()
        expected = {"loss", "recon", "latent_reg", "mse"}
        # every decoder regularizer is a loss term but the optimizer's weight decay
        expected |= {"decoder_reg"} if dreg not in ("none", "weight_decay") else set()
        expected |= {"codebook", "commitment"} if code != "none" else set()
        expected |= {"sigma_x2"} if var not in ("mse", "sse") else set()
        problems = []
        if set(out) != expected:
            problems.append(f"terms {sorted(out)} != {sorted(expected)}")
        if not all(torch.isfinite(v).all() for v in out.values()):
            problems.append("non-finite term")
        for name, p in model.named_parameters():
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any():
                problems.append(f"no gradient reaches {name}")
        if problems:
            failures.append(f"{fields}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures[:10])
    # a stochastic sampler with a point posterior is refused outright; everything else builds
    if posterior == "point" and sampling != "mean":
        assert built == 0
    else:
        assert built > 0


@pytest.mark.parametrize("fields,needle", [
    (dict(posterior="point", sampling="unscented"), "sampling='unscented' needs a stochastic"),
    (dict(posterior="point", sampling="reparam"), "posterior='point'"),
    (dict(codebook="soft", codebook_size=0), "codebook_size=0"),
    (dict(codebook="soft", codebook_size=2.5), "codebook_size=2.5 must be an integer"),
    (dict(second_stage_epochs=True), "second_stage_epochs=True must be an integer >= 0"),
    (dict(sigma_x2=0.0), "sigma_x2=0.0 must be > 0"),
    (dict(sigma_x2=-1.0), "sigma_x2=-1.0"),
    (dict(posterior="point", sampling="mean", regularizer="kl"), "regularizer='kl'"),
    (dict(posterior="point", sampling="mean", regularizer="none",
          decoder_reg="eig_gradient_penalty"),
     "lambda_max"),
    (dict(posterior="diagonal", codebook="vq"), "codebook='vq'"),
    (dict(sampling="unscented", num_samples=40, latent_dim=4), "num_samples=40 exceeds the 9"),
    (dict(sampling="mean", num_samples=3), "num_samples=3 has no meaning"),
    (dict(kappa=-16.0, latent_dim=16), "kappa=-16.0 must be > -latent_dim"),
    (dict(sampling="unscented_all", kappa=-0.5), "negative weight"),
    (dict(beta=-1.0), "beta=-1.0 must be >= 0"),
    (dict(gamma=float("nan")), "gamma=nan"),
    (dict(latent_dim=0), "latent_dim=0 must be an integer >= 1"),
    (dict(batch_size=1), "batch_size=1 must be >= 2"),
    (dict(posterior="gaussian"), "posterior='gaussian' is not one of diagonal, full, full_bounded, point"),
    (dict(decoder_variance="iso_x"), "decoder_variance='iso_x'"),
])
def test_invalid_combinations_are_refused_in_one_clear_line(fields, needle):
    with pytest.raises(ConfigError) as e:
        Config(**fields)
    message = str(e.value)
    assert needle in message and "\n" not in message


def test_unknown_field_and_preset_are_named():
    with pytest.raises(ConfigError, match="unknown config field.*betta"):
        models.build("UAE", betta=1.0)
    with pytest.raises(ConfigError, match="unknown preset 'UEA'.*UAE"):
        models.build("UEA")


def test_presets_are_data_and_named():
    for name, cfg in models.PRESETS.items():
        assert isinstance(cfg, Config) and cfg.name == name
    # the UAE Table 2 ablation differs from row to row by one axis at a time
    p = models.PRESETS
    assert p["VAE*"].replace(regularizer="kl", name="x") == p["VAE"].replace(
        beta=p["VAE*"].beta, name="x")
    assert p["UT-VAE*"] == p["VAE*"].replace(sampling="unscented")
    assert p["UT-VAE*-full-Σ"] == p["UT-VAE*"].replace(posterior="full")
    assert p["UAE"] == p["UT-VAE*-full-Σ"].replace(decoder_reg="eig_gradient_penalty",
                                                   gamma=p["UAE"].gamma)
    assert p["RAE-GP"] == p["RAE"].replace(decoder_reg="gradient_penalty", gamma=p["RAE-GP"].gamma)
    # the code's reading of a row differs from the paper's only in the code's forms
    for row in ("VAE*", "UT-VAE*", "UT-VAE*-full-Σ"):
        paper, code = p[row], p[f"{row}-code"]
        assert code == paper.replace(regularizer="wasserstein_unsquared",
                                     posterior="full_bounded" if paper.posterior == "full"
                                     else paper.posterior)


def test_config_round_trips_through_a_dict():
    cfg = models.PRESETS["UAE-8σ"]
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg and again.name == cfg.name


def test_weight_decay_is_an_optimizer_rule_on_the_decoder_only():
    model = models.build("RAE-L2", (1, 8, 8), gamma=0.5)
    groups = {g["weight_decay"]: g["params"] for g in model.make_optimizer().param_groups}
    assert {id(p) for p in groups[0.5]} == {id(p) for p in model.decoder.parameters()}
    assert {id(p) for p in groups[0.0]} == {id(p) for p in model.encoder.parameters()}
    # and it is not a loss term
    assert "decoder_reg" not in model.loss(torch.rand(4, 1, 8, 8))
    plain = models.build("RAE", (1, 8, 8))
    assert all(g["weight_decay"] == 0.0 for g in plain.make_optimizer().param_groups)


def test_encode_returns_mean_and_covariance_factor():
    model = models.build("UAE", (1, 8, 8), latent_dim=5)
    mean, L = model.encode(torch.rand(3, 1, 8, 8))
    assert mean.shape == (3, 5) and L.shape == (3, 5, 5)
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert model.decode(mean).shape == (3, 1, 8, 8)
    assert model.decode(torch.zeros(2, 3, 5)).shape == (2, 3, 1, 8, 8)  # any leading dims


def test_config_lists_exactly_the_values_each_axis_module_implements():
    """config.py lists the axis values (to validate without building anything); each must have
    its function in the axis's dict, and no function may be unreachable from a Config."""
    from models import codebooks, decoder_regs, density, networks, posteriors, regularizers
    from models import samplers, schedules, variances
    assert set(C.AXES["posterior"]) == set(posteriors.POSTERIORS)
    assert set(C.AXES["sampling"]) == set(samplers.SAMPLERS)
    assert set(C.AXES["regularizer"]) == set(regularizers.REGULARIZERS)
    assert set(C.AXES["decoder_reg"]) == set(decoder_regs.DECODER_PENALTIES)
    assert set(C.AXES["decoder_variance"]) == set(variances.DECODER_VARIANCES)
    assert set(C.AXES["codebook"]) == set(codebooks.CODEBOOKS)
    assert set(C.AXES["density"]) == set(density.DENSITIES)
    assert set(C.AXES["arch"]) == {"auto", *networks.ARCHS}
    assert set(C.AXES["output"]) == set(networks.OUTPUTS)
    assert set(C.AXES["lr_schedule"]) == set(schedules.LR_SCHEDULES)
