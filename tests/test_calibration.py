"""FID and KID on a calibrated scale (issue 28, part 3): features standardized by the
reference split's mean and total s.d. for every caller of the feature-space API, the FID
scaling identity, KID on standardized features against a numpy MMD², KID's std NaN where its
subsets cannot differ, the raw FID kept beside the standardized one where a space reports it
(Inception), and the real-data floor at the evaluation's own sizes, checked against
independent computations on the digits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.stats import kendalltau

import models
from engine.data import load_dataset
from engine.eval.evaluate import EvalSettings, evaluate
from engine.eval.groups import fid as fid_group
from engine.eval.metrics import features as F
from engine.eval.metrics import sample_quality as sq
from engine.eval.metrics.frechet import frechet_distance, statistics
from engine.eval.metrics.sample_quality import kid, subsets_differ
from engine.files import CACHE_ENV
from test_evaluation import _unbiased_mmd2_numpy  # Bińkowski et al. 2018, Eq. 2, in numpy

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of the module's own with a classifier of 60 steps (the full one is not what
    these tests are about)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv(CACHE_ENV, str(folder))
        mp.setattr(F, "CLASSIFIER_STEPS", 60)
        yield folder


def _raw_features(space, images) -> np.ndarray:
    """The network's own features, computed here without extract()."""
    with torch.no_grad():
        return space.net(models.float_images(images))[0].double().numpy()


def _noisy(images, sigma, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = models.float_images(images)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def test_every_caller_of_the_feature_api_gets_standardized_features(digits, cache):
    space = F.choose_features(digits, "classifier", CPU)  # the call of before, unchanged
    z = space.standardization
    assert z is not None and z.split == "test" and space.cache_key.endswith("-ztest")
    raw_ref = _raw_features(space, digits.test.images)
    mu, cov = raw_ref.mean(0), np.cov(raw_ref, rowvar=False)
    sigma_tot = math.sqrt(np.trace(cov) / raw_ref.shape[1])
    assert z.scale == pytest.approx(sigma_tot, rel=1e-9)
    np.testing.assert_allclose(z.mu, mu, rtol=1e-9, atol=1e-9)
    ref = F.reference(digits, "test", space, CPU)
    # the reference set standardized: mean 0, tr Sigma = d
    np.testing.assert_allclose(ref.stats.mu, 0, atol=1e-9)
    assert np.trace(ref.stats.cov) == pytest.approx(F.CLASSIFIER_DIM, rel=1e-9)
    np.testing.assert_allclose(ref.features, (raw_ref - mu) / sigma_tot, atol=1e-4)
    feats, _ = F.extract(space, digits.val.images, CPU)
    np.testing.assert_allclose(feats, (_raw_features(space, digits.val.images) - mu) / sigma_tot,
                               rtol=1e-9, atol=1e-9)
    raw, _ = F.extract(space, digits.val.images, CPU, raw=True)
    np.testing.assert_allclose(raw, _raw_features(space, digits.val.images), rtol=1e-12)
    assert "standardized by the test split" in space.label
    assert F.choose_features(digits, "classifier", CPU, reference_split=None
                             ).standardization is None


def test_standardized_fid_is_the_raw_fid_over_sigma_tot_squared_and_keeps_ranks(digits, cache):
    space = F.choose_features(digits, "classifier", CPU)
    ref_z = F.reference(digits, "test", space, CPU)
    raw_ref = _raw_features(space, digits.test.images)
    sigma2 = np.trace(np.cov(raw_ref, rowvar=False)) / raw_ref.shape[1]
    raw_fids, z_fids = [], []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):  # real images, then ever noisier copies
        images = _noisy(digits.val.images, sigma) if sigma else digits.val.images
        raw = _raw_features(space, images)
        # pytorch-fid's own formula on the raw features, nothing of ours
        theirs = calculate_frechet_distance(raw_ref.mean(0), np.cov(raw_ref, rowvar=False),
                                            raw.mean(0), np.cov(raw, rowvar=False))
        ours = frechet_distance(ref_z.stats, statistics(F.extract(space, images, CPU)[0]))
        assert ours == pytest.approx(theirs / sigma2, rel=1e-6)
        raw_fids.append(theirs)
        z_fids.append(ours)
    assert kendalltau(raw_fids, z_fids).statistic == pytest.approx(1.0)
    assert list(np.argsort(raw_fids)) == list(np.argsort(z_fids))
    assert z_fids == sorted(z_fids)  # noisier is worse: the scale did not hide it
    # the exact map of the statistics: FID(z) = FID(f) / sigma_tot^2 to round-off
    a = statistics(raw_ref).with_sqrt()
    b = statistics(_raw_features(space, _noisy(digits.val.images, 0.1)))
    z = F.Standardization.of("test", a)
    assert frechet_distance(z.stats(a), z.stats(b)) == pytest.approx(
        frechet_distance(a, b) / z.scale ** 2, rel=1e-10)


def test_kid_on_standardized_features_is_the_numpy_mmd_of_the_standardized_features(
        digits, cache):
    space = F.choose_features(digits, "classifier", CPU)
    raw_ref = _raw_features(space, digits.test.images)
    noisy = _noisy(digits.val.images[:269], 0.2)  # as many as the reference's 269
    raw = _raw_features(space, noisy)
    mu, s = raw_ref.mean(0), math.sqrt(np.trace(np.cov(raw_ref, rowvar=False)) / 64)
    ref = F.reference(digits, "test", space, CPU)
    feats, _ = F.extract(space, noisy, CPU)
    value, spread = kid(ref.features, feats, subsets=3, subset_size=10_000)
    expected = _unbiased_mmd2_numpy((raw_ref - mu) / s, (raw - mu) / s)
    assert value == pytest.approx(expected, rel=1e-4)  # the reference's float32 features
    assert math.isnan(spread)  # 269 vs 269 features: every subset is both sets
    # the raw features' KID is another number (the kernel is not translation-invariant)
    assert not kid(raw_ref, raw, 1, 10_000)[0] == pytest.approx(value, rel=0.1)


def test_kid_std_is_nan_exactly_where_its_subsets_cannot_differ():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(40, 4))
    assert not subsets_differ(30, 30, 30) and not subsets_differ(30, 30, 1000)
    assert subsets_differ(30, 40, 1000) and subsets_differ(30, 30, 20)
    value, spread = kid(a, a[::-1], subsets=7, subset_size=30)
    assert math.isnan(spread) and value == pytest.approx(_unbiased_mmd2_numpy(a, a[::-1]))
    value, spread = kid(a, b, subsets=20, subset_size=1000)  # b's subsets of 30 differ
    assert spread > 0 and math.isfinite(value)


def test_floor_images_are_disjoint_from_the_reference_and_as_many_as_asked_or_all(digits):
    images, where = F.floor_images(digits, "test", 100)
    assert len(images) == 100 and where == "100 val"
    assert _rows_in(images, digits.val.images) and not _rows_in(images[:1], digits.test.images)
    images, where = F.floor_images(digits, "test", 300)  # val has 270: the rest from train
    assert len(images) == 300 and where == "270 val + 30 train"
    assert torch.equal(images[:270], digits.val.images)
    images, where = F.floor_images(digits, "test", 10_000)  # fewer exist: all of them
    assert len(images) == 270 + 1258 and where == "270 val + 1,258 train"
    _, where = F.floor_images(digits, "val", 300)
    assert where == "269 test + 31 train"


def _rows_in(a: torch.Tensor, b: torch.Tensor) -> bool:
    rows = {tuple(x.flatten().tolist()) for x in b}
    return all(tuple(x.flatten().tolist()) in rows for x in a)


def test_the_floor_against_an_independent_computation_and_cached(digits, cache, monkeypatch):
    space = F.choose_features(digits, "classifier", CPU)
    f = F.real_floor(digits, "test", space, 269, CPU, kid_subsets=5, kid_subset_size=1000)
    raw_ref = _raw_features(space, digits.test.images)
    raw_val = _raw_features(space, F.floor_images(digits, "test", 269)[0])
    mu, s = raw_ref.mean(0), math.sqrt(np.trace(np.cov(raw_ref, rowvar=False)) / 64)
    zr, zv = (raw_ref - mu) / s, (raw_val - mu) / s
    fid = calculate_frechet_distance(zr.mean(0), np.cov(zr, rowvar=False), zv.mean(0),
                                     np.cov(zv, rowvar=False))
    assert f["fid"] == pytest.approx(fid, rel=1e-5)
    assert f["kid"] == pytest.approx(_unbiased_mmd2_numpy(zr, zv), rel=1e-4)
    assert math.isnan(f["kid_std"]) and f["n"] == 269 and f["images"] == "269 val"
    assert 0 < f["fid"] < 5  # real against real: far below the hundreds of raw FIDs
    monkeypatch.setattr(F, "extract", lambda *a, **k: pytest.fail("not read from the cache"))
    again = F.real_floor(digits, "test", space, 269, CPU, kid_subsets=5, kid_subset_size=1000)
    assert again["fid"] == f["fid"] and math.isnan(again["kid_std"])


def test_evaluate_reports_the_floor_per_set_and_the_raw_fid_where_the_space_keeps_it(
        digits, cache, monkeypatch):
    model = models.build("AE", digits.image_shape, latent_dim=4)
    settings = EvalSettings(metrics=("fid",), fid_samples=300, densities=("prior",),
                            kid_subsets=5)
    out = evaluate(model, digits, CPU, settings, seed=0)
    notes = out["notes"]
    for name in ("rec", "sample_prior", "interp_mid", "interp_rand"):
        for k in ("fid", "kid", "floor_fid", "floor_kid"):
            assert math.isfinite(out[f"eval/{k}_{name}"]), (k, name)
        assert out[f"eval/floor_fid_{name}"] < out[f"eval/fid_{name}"]  # an untrained model
    space = F.choose_features(digits, "classifier", CPU)
    rec = F.real_floor(digits, "test", space, 269, CPU, 5, 1000)
    gen = F.real_floor(digits, "test", space, 300, CPU, 5, 1000)
    assert out["eval/floor_fid_rec"] == rec["fid"] and out["eval/floor_kid_rec"] == rec["kid"]
    assert out["eval/floor_fid_sample_prior"] == gen["fid"]
    assert "270 val + 30 train" in notes["floor"] and "269 val" in notes["floor"]
    assert math.isnan(out["eval/kid_std_rec"]) and "cannot differ" in notes["eval/kid_std_rec"]
    assert math.isfinite(out["eval/kid_std_sample_prior"])
    assert not any(k.startswith(("eval/fidz", "eval/kidz")) for k in out)
    # a space that keeps the raw FID (Inception's case): eval/fid_ raw, eval/fidz_ standardized
    real = F.choose_features

    def raw_keeping(*args, **kwargs):
        space = real(*args, **kwargs)
        space.reports_raw = True
        return space
    monkeypatch.setattr(fid_group, "choose_features", raw_keeping)
    both = evaluate(model, digits, CPU, settings, seed=0)
    scale2 = space.standardization.scale ** 2
    for name in ("rec", "sample_prior"):
        assert both[f"eval/fidz_{name}"] == out[f"eval/fid_{name}"]
        assert both[f"eval/fid_{name}"] == pytest.approx(out[f"eval/fid_{name}"] * scale2,
                                                         rel=1e-12)
        assert both[f"eval/kidz_{name}"] == out[f"eval/kid_{name}"]
        assert both[f"eval/floor_fidz_{name}"] == out[f"eval/floor_fid_{name}"]
        assert both[f"eval/floor_fid_{name}"] == pytest.approx(
            out[f"eval/floor_fid_{name}"] * scale2, rel=1e-12)
    # the raw KID against numpy on the raw features
    raw_ref = _raw_features(space, digits.test.images)
    recs = torch.cat(list(sq.reconstructions(model, digits.test.images, CPU, 500)))
    assert both["eval/kid_rec"] == pytest.approx(
        _unbiased_mmd2_numpy(raw_ref, _raw_features(space, recs)), rel=1e-4)
    # and pytorch-fid's raw FID
    raw = _raw_features(space, recs)
    assert both["eval/fid_rec"] == pytest.approx(calculate_frechet_distance(
        raw_ref.mean(0), np.cov(raw_ref, rowvar=False), raw.mean(0), np.cov(raw, rowvar=False)),
        rel=1e-5)
