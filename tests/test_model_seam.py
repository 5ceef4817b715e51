"""The seam between models/ and engine/: evaluation asks the model, never an axis value's name.

A new decoder variance or codebook is added in models/ alone: here toy values are registered
through the public registries and the evaluation suite runs on them; and engine/ is searched
for axis values written as strings and for comparisons against a config's axis fields.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import models
from engine.data import load_dataset
from engine.eval.evaluate import EvalSettings, evaluate
from engine.eval.metrics.likelihood import iwae_nll
from models import config, variances
from models.codebooks import vector_quantized

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def registered():
    """register(axis, name, value) for the test; every value unregistered after it."""
    added = []

    def add(axis, name, value):
        models.register(axis, name, value)
        added.append((axis, name))
    yield add
    for axis, name in reversed(added):
        models.unregister(axis, name)


# A CONSTANT variance the engine has never seen: sigma_x^2 = 0.25 for every pixel, written as
# its own value rather than as "fixed" with sigma_x2=0.25.
QUARTER = 0.25


def _quarter_loss(x, x_hat, weights, log_var=None, cfg=None):
    var = x.new_tensor(QUARTER)
    return variances.gaussian_nll(x, x_hat, weights, var), var


TOY_VARIANCE = models.DecoderVariance(
    _quarter_loss, models.CONSTANT, lambda err2, cfg: torch.tensor(QUARTER, dtype=torch.float64))


def test_a_toy_decoder_variance_is_evaluated_by_what_it_declares(digits, registered):
    registered("decoder_variance", "toy_quarter", TOY_VARIANCE)
    toy = models.build("VAE", digits.image_shape, latent_dim=4, arch="mlp", hidden=32,
                       decoder_variance="toy_quarter")
    # the same weights under the built-in fixed variance at 0.25: an independent reference
    ref = models.build("VAE", digits.image_shape, latent_dim=4, arch="mlp", hidden=32,
                       decoder_variance="fixed", sigma_x2=QUARTER)
    ref.load_state_dict(toy.state_dict())
    x = digits.train.images[:16]
    losses = []
    for m in (toy, ref):
        torch.manual_seed(0)  # the same reparameterised draws
        losses.append(m.loss(x)["recon"])
    assert torch.allclose(*losses)

    settings = EvalSettings(metrics=("likelihood", "variance", "diagnostics"), nll_images=0,
                            iwae_k=8, variance_draws=2, diagnostic_images=64, grad_var_draws=2)
    out = evaluate(toy, digits, torch.device("cpu"), settings, seed=0)
    assert "eval/nll" not in out["notes"] and "eval/sigma_x2" not in out["notes"]
    assert out["eval/sigma_x2"] == pytest.approx(QUARTER, rel=1e-12)
    assert out["eval/gamma"] == pytest.approx(QUARTER, rel=1e-12)  # one scalar: Dai & Wipf's
    expected = iwae_nll(ref, digits.test.images, k=8, seed=0)["nll"]  # nll_images=0: all
    assert math.isfinite(out["eval/nll"]) and out["eval/nll"] == pytest.approx(expected, rel=1e-9)
    # a sigma_x^2 of 1 would give a different bound: the toy's variance is the one used
    unit = models.build("VAE", digits.image_shape, latent_dim=4, arch="mlp", hidden=32,
                        decoder_variance="fixed", sigma_x2=1.0)
    unit.load_state_dict(toy.state_dict())
    other = iwae_nll(unit, digits.test.images, k=8, seed=0)["nll"]
    assert abs(other - expected) > 1.0


def _snap(mu, z, codes):
    """VQ under another name: the decoder sees the nearest code."""
    return vector_quantized(mu, z, codes)


def test_a_toy_codebook_that_substitutes_codes_is_generated_through_and_has_no_nll(
        digits, registered, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS backbone here: PPL says so
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    registered("codebook", "snap", models.Codebook(_snap, substitutes=True))
    model = models.build("AE", digits.image_shape, latent_dim=3, arch="mlp", hidden=32,
                         codebook="snap", codebook_size=5, decoder_variance="fixed")
    z = torch.randn(7, 3)
    codes = models.nearest_code(z, model.codebook)
    assert torch.equal(model.generate(z), model.decode(codes))
    assert not torch.equal(model.generate(z), model.decode(z))

    settings = EvalSettings(metrics=("likelihood", "latent"))
    out = evaluate(model, digits, torch.device("cpu"), settings, seed=0)
    assert "codebook='snap'" in out["notes"]["eval/nll"] and "eval/nll" not in out
    with torch.no_grad():  # MVU-AE Table 4's Var. of the codes the decoder sees
        mean = model.posterior(digits.test.images).mean
        expected = models.nearest_code(mean, model.codebook).double().var(0).sum().item()
    assert out["eval/latent_var"] == pytest.approx(expected, rel=1e-9)


def test_a_density_set_declared_in_models_alone_is_sampled_for_its_fid(
        digits, monkeypatch, tmp_path):
    """Issue 32: a density set (its density, the fields it is fitted with) is a record in
    models/; the evaluation iterates them, so a new one needs no engine edit. A toy GMM-3:
    its FID is computed, and its samples are those of the GMM-3 that models.fit_density fits
    for a config of 3 components (the same latents, the same seed)."""
    from engine.eval.metrics import features as F
    from engine.files import CACHE_ENV
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(F, "CLASSIFIER_STEPS", 60)  # the classifier is not what this is about
    monkeypatch.setitem(models.DENSITY_SETS, "toy_gmm3",
                        models.DensitySet("gmm", {"gmm_components": 3}))
    model = models.build("AE", digits.image_shape, latent_dim=4, arch="mlp", hidden=32)
    settings = EvalSettings(metrics=("fid",), fid_samples=300, densities=("toy_gmm3",),
                            kid_subsets=5)
    drawn = {}
    out = evaluate(model, digits, torch.device("cpu"), settings, seed=0, drawn=drawn)
    assert math.isfinite(out["eval/fid_sample_toy_gmm3"])
    three = models.build("AE", digits.image_shape, latent_dim=4, arch="mlp", hidden=32,
                         gmm_components=3, density="gmm")
    three.load_state_dict(model.state_dict())
    expected = models.fit_density(three, digits.train.images, seed=0).sample(300, seed=0)
    assert torch.equal(drawn["toy_gmm3"], expected.float())


def test_a_registered_value_is_validated_and_can_be_removed(registered):
    with pytest.raises(models.ConfigError, match="decoder_variance='toy_quarter' is not one of"):
        models.Config(decoder_variance="toy_quarter")
    registered("decoder_variance", "toy_quarter", TOY_VARIANCE)
    assert models.Config(decoder_variance="toy_quarter").decoder_variance == "toy_quarter"
    with pytest.raises(models.ConfigError, match="exists already"):
        models.register("decoder_variance", "mse", TOY_VARIANCE)
    with pytest.raises(models.ConfigError, match="not an axis"):
        models.register("colour", "red", None)


# --------------------------------------------------------------------------- engine/ source

# The axes that are pieces of the model: engine/ must not name their values. Six of their
# values are also words engine/ uses in another sense, allowed as strings (a comparison with
# the config's field is caught by the second test whatever the string):
MODEL_AXES = ("posterior", "sampling", "regularizer", "decoder_reg", "decoder_variance",
              "codebook", "density")
# engine/report/ still names the density sets' pictures and columns ("GMM-10", "2nd stage")
# from the names it reads in a run's files: it runs without models/ (tests/test_layout.py)
# and search.json does not carry the sets' labels yet
READS_NAMES_FROM_FILES = ("engine/report",)
OTHER_SENSE = {
    "mse": "a metric (test/mse, Takida Table 1's MSE)",
    "kl": "a metric (Takida Table 1's KL)",
    "mean": "an aggregation (pandas' mean over seeds)",
    "full": "the PPL's pair sampling (latent.path_samples)",
    "none": "--eval none, and matplotlib's fmt='none'",
    "fixed": "a budget of a fixed number of epochs (search.json's \"budget\")",
}


def _code_strings(tree: ast.AST):
    """Every string constant of a module that is not a docstring, with its line."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docs):
            yield node.lineno, node.value


def test_engine_writes_no_value_of_a_model_axis_as_a_string():
    values = {v: axis for axis in MODEL_AXES for v in config.AXES[axis]}
    values.update({name: "density set" for name in models.DENSITY_SETS})
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r} ({values[text]})"
             for path in sorted((ROOT / "engine").rglob("*.py"))
             if not str(path.relative_to(ROOT)).startswith(READS_NAMES_FROM_FILES)
             for line, text in _code_strings(ast.parse(path.read_text()))
             if text in values and text not in OTHER_SENSE]
    assert not found, "engine/ names axis values (ask the model instead):\n" + "\n".join(found)


def _axis_comparisons(tree: ast.AST, fields) -> list[ast.Compare]:
    """Comparisons that read an attribute named as a config axis (cfg.codebook == ...)."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(isinstance(n, ast.Attribute) and n.attr in fields for n in ast.walk(node))]


def test_engine_compares_no_config_axis_field():
    """No `cfg.decoder_variance == ...`, `model.cfg.codebook in (...)`, ... anywhere in engine/
    (every axis of models/config.py, the architecture and the density included)."""
    fields = set(config.AXES)
    found = [f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
             for path in sorted((ROOT / "engine").rglob("*.py"))
             for node in _axis_comparisons(ast.parse(path.read_text()), fields)]
    assert not found, "engine/ branches on a config's axis:\n" + "\n".join(found)


def test_the_guards_catch_what_they_are_for():
    """The two scans above find the leaks this seam removed, written the old way."""
    old = ast.parse('if model.cfg.codebook == "vq":\n    z = 1\n'
                    'kind = cfg.decoder_variance in ("iso_i_mle", "diag_i_mle")\n')
    values = {v for axis in MODEL_AXES for v in config.AXES[axis]}
    assert {t for _, t in _code_strings(old)} & values == {"vq", "iso_i_mle", "diag_i_mle"}
    assert len(_axis_comparisons(old, set(config.AXES))) == 2
