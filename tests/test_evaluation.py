"""The evaluation suite: the Fréchet distance, precision/recall, IS, SSIM, the classifier
feature space and its cached reference statistics, and evaluate()'s notes."""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import structural_similarity

import models
from engine.data import load_dataset
from engine.eval.evaluate import EvalSettings, evaluate, psnr, ssim, ssim_kernel
from engine.eval.metrics import features as F
from engine.files import CACHE_ENV
from engine.eval.metrics.frechet import TooFewSamples, frechet_distance, statistics
from engine.eval.metrics.sample_quality import inception_score, kid, precision_recall

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _gaussian(rng, n, d, shift=0.0, scale=1.0):
    a = rng.standard_normal((d, d)) / math.sqrt(d)
    return (rng.standard_normal((n, d)) @ a) * scale + shift


def test_frechet_agrees_with_pytorch_fid_to_1e_6():
    rng = np.random.default_rng(0)
    x, y = _gaussian(rng, 400, 32), _gaussian(rng, 500, 32, 0.3, 1.5)
    a, b = statistics(x).with_sqrt(), statistics(y)
    ours = frechet_distance(a, b)
    theirs = calculate_frechet_distance(a.mu, a.cov, b.mu, b.cov)
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)
    assert frechet_distance(statistics(x), b) == pytest.approx(ours, rel=1e-9)  # no cached root


def test_frechet_of_identical_sets_is_zero_and_of_shifted_gaussians_the_closed_form():
    rng = np.random.default_rng(1)
    x = _gaussian(rng, 300, 16)
    s = statistics(x).with_sqrt()
    assert abs(frechet_distance(s, statistics(x))) < 1e-8
    # same covariance, mean shifted by delta: d^2 = ||delta||^2 exactly
    delta = rng.standard_normal(16)
    assert frechet_distance(s, statistics(x + delta)) == pytest.approx(delta @ delta, rel=1e-8)
    # N(0, I) vs N(m, c^2 I): d^2 = ||m||^2 + d (1 - c)^2
    a = type(s)(np.zeros(16), np.eye(16), 10).with_sqrt()
    b = type(s)(np.full(16, 0.5), 4 * np.eye(16), 10)
    assert frechet_distance(a, b) == pytest.approx(16 * 0.25 + 16 * 1.0, rel=1e-12)


def test_fewer_samples_than_feature_dimensions_is_refused():
    with pytest.raises(TooFewSamples, match="rank-deficient"):
        statistics(np.zeros((64, 64)))


def test_precision_recall_against_brute_force_numpy():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((200, 5)), rng.standard_normal((200, 5)) * 0.5 + 0.4

    def manifold(points, k=3):
        d = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # [:, 0] is the point itself

    def inside(q, points, radii):
        return (np.linalg.norm(q[:, None] - points[None], axis=-1) <= radii[None]).any(1).mean()

    p, r = precision_recall(real, fake, k=3, batch=64)
    assert p == pytest.approx(inside(fake, real, manifold(real)))
    assert r == pytest.approx(inside(real, fake, manifold(fake)))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def _unbiased_mmd2_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. 2018, Eq. 2 with k(a, b) = (a·b / d + 1)^3: the diagonal left out."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy))
            / (n * (n - 1)) - 2 * kxy.mean())


def test_kid_is_the_unbiased_polynomial_mmd_and_unbiased_where_fid_is_not():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.5, 1.2, size=(40, 6))
    # a subset as large as the sets holds all of them: every subset gives the full estimate
    value, spread = kid(real, fake, subsets=5, subset_size=1000)
    assert value == pytest.approx(_unbiased_mmd2_numpy(real, fake), rel=1e-10)
    assert math.isnan(spread)  # no spread to report, not round-off (it printed ~1e-6)
    # subsets of 20: their mean is an average of estimates, their spread positive
    value, spread = kid(real, fake, subsets=50, subset_size=20, seed=1)
    assert spread > 0 and abs(value - _unbiased_mmd2_numpy(real, fake)) < 3 * spread
    # two samples of one distribution: KID averages to 0 over independent draws, FID does not
    # (it is biased upwards at small n, the embedded reference sets' case)
    kids, fids = [], []
    for seed in range(100):
        r = np.random.default_rng(seed)
        a, b = r.normal(size=(60, 4)), r.normal(size=(60, 4))
        kids.append(kid(a, b, subsets=1, subset_size=60)[0])
        fids.append(frechet_distance(statistics(a), statistics(b)))
    sem = np.std(kids) / np.sqrt(len(kids))
    assert abs(np.mean(kids)) < 3 * sem
    assert np.mean(fids) > 10 * np.std(fids) / np.sqrt(len(fids))  # clearly above 0


def test_kid_from_whole_set_sums_is_torchmetrics_estimate_on_the_same_subsets():
    """Where a subset always holds one whole set (its size at most the subset size), KID
    takes that set's terms from sums computed once; each subset's estimate, and so the mean
    and std, is still torchmetrics' poly_mmd of the same two subsets (drawn as before: real,
    then fake, from one generator)."""
    from torchmetrics.image.kid import poly_mmd
    rng = np.random.default_rng(3)

    def per_subset(real, fake, subsets, size, seed):
        n = min(size, len(real), len(fake))
        r, f = torch.from_numpy(real), torch.from_numpy(fake)
        gen = torch.Generator().manual_seed(seed)
        return torch.stack([poly_mmd(r[torch.randperm(len(r), generator=gen)[:n]],
                                     f[torch.randperm(len(f), generator=gen)[:n]])
                            for _ in range(subsets)])
    for n_real, n_fake, size in ((30, 500, 40), (500, 30, 40), (30, 500, 30), (200, 300, 50)):
        real, fake = rng.normal(size=(n_real, 5)), rng.normal(0.3, 1.1, size=(n_fake, 5))
        expected = per_subset(real, fake, 20, size, seed=7)
        value, spread = kid(real, fake, subsets=20, subset_size=size, seed=7)
        assert value == pytest.approx(float(expected.mean()), rel=1e-12)
        assert spread == pytest.approx(float(expected.std(unbiased=False)), rel=1e-9)
        assert spread > 0


def test_inception_score_known_answers():
    n, c = 1000, 10
    uniform = np.zeros((n, c))  # p(y|x) uniform: no information, IS 1
    assert inception_score(uniform) == pytest.approx(1.0)
    confident = np.full((n, c), -1e4)  # one-hot predictions, classes balanced in each split
    confident[np.arange(n), np.arange(n) % c] = 0
    assert inception_score(confident) == pytest.approx(c, rel=1e-6)


def test_psnr_of_a_known_noise_level():
    # its own generator: the global one's state depends on the tests run before it, and
    # about 1 draw in 250 lands 0.05 dB off (sd 0.017 dB)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 1, 8, 8, generator=g)
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    mse = float((noisy - x).pow(2).mean())
    assert psnr(mse) == pytest.approx(20.0, abs=0.05)  # 10 log10(1 / 0.01)


class _Noisy:
    """A stand-in model whose reconstruction is x plus fixed noise (clamped to [0, 1])."""

    def __init__(self, noise):
        self.noise, self.at = noise, 0

    def reconstruct(self, x):
        out = (x + self.noise[self.at:self.at + len(x)]).clamp(0, 1)
        self.at += len(x)
        return out


def test_ssim_is_one_for_a_perfect_reconstruction_and_agrees_with_scikit_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(20, 1, 56, 56, generator=gen), 2)  # 28x28
    assert ssim(_Noisy(torch.zeros_like(x)), x, torch.device("cpu"), 8) == pytest.approx(1.0)
    noise = 0.1 * torch.randn(x.shape, generator=gen)
    ours = ssim(_Noisy(noise), x, torch.device("cpu"), 8)
    rec = (x + noise).clamp(0, 1)
    theirs = np.mean([structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0,
                                            gaussian_weights=True, sigma=1.5, win_size=11,
                                            use_sample_covariance=False)
                      for a, b in zip(rec, x)])
    assert ssim_kernel(x.shape) == 11 and ssim_kernel((1, 8, 8)) == 7
    assert ours == pytest.approx(theirs, abs=0.01)  # the two treat the borders differently
    assert ssim(_Noisy(2 * noise), x, torch.device("cpu"), 8) < ours - 0.1


def test_classifier_features_are_trained_once_deterministically_and_cached(
        digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(F, "train_classifier", functools.partial(TRAIN, steps=60))  # shortened
    a = F.classifier_space(digits, torch.device("cpu"))
    calls = []
    monkeypatch.setattr(F, "train_classifier", lambda *a, **k: calls.append(1))
    b = F.classifier_space(digits, torch.device("cpu"))  # from the cache: not trained again
    assert not calls and a.name == b.name == "classifier-digits"
    x = digits.test.images[:16]
    assert torch.equal(a.net(x)[0], b.net(x)[0])
    net1, acc1 = TRAIN(digits, steps=30)
    net2, acc2 = TRAIN(digits, steps=30)
    assert acc1 == acc2 and all(torch.equal(p, q) for p, q in
                                zip(net1.state_dict().values(), net2.state_dict().values()))
    ref = F.reference(digits, "test", a, torch.device("cpu"))
    feats, _ = F.extract(a, digits.test.images, torch.device("cpu"))
    np.testing.assert_allclose(ref.stats.mu, feats.mean(0), rtol=1e-10)
    assert len(list((tmp_path / "reference").glob("digits-test-classifier-digits-*.npz"))) == 1
    again = F.reference(digits, "test", a, torch.device("cpu"))  # read back from the cache
    np.testing.assert_array_equal(again.stats.sqrt_cov, ref.stats.sqrt_cov)


def test_a_search_trains_the_fid_classifier_on_its_driver_before_any_trial(
        tmp_path, monkeypatch, capsys):
    """engine/run/search.py: where the cache lacks the data set's classifier and the run's
    FIDs use it, the driver trains it once, before the trials, and says so; a cached one, a
    run without FID and a run in Inception's features leave the driver alone."""
    from types import SimpleNamespace
    from engine.run.search import _train_feature_classifier
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    calls = []

    def shortened(data, **kw):
        calls.append(data.name)
        return TRAIN(data, steps=20)
    monkeypatch.setattr(F, "train_classifier", shortened)

    def spec(metrics=("reconstruction", "fid"), features="classifier"):
        return SimpleNamespace(dataset="digits", data_root=None, evaluation=EvalSettings(
            metrics=metrics, features=features))
    _train_feature_classifier(spec(metrics=("reconstruction",)))
    _train_feature_classifier(spec(features="inception"))
    assert not calls and not (tmp_path / "features").exists()
    _train_feature_classifier(spec())
    assert calls == ["digits"] and F.classifier_cached(load_dataset("digits"))
    out = capsys.readouterr().out
    assert "training digits's classifier once, before the trials" in out
    assert "own CNN trained on the labels of digits (test accuracy" in out
    _train_feature_classifier(spec())  # cached now: nothing to do, nothing said
    assert calls == ["digits"] and capsys.readouterr().out == ""


TRAIN = F.train_classifier


@pytest.mark.parametrize("side, grid", [(8, 1), (28, 4), (32, 4)])
def test_the_classifier_keeps_where_the_strokes_are_on_images_of_16_px_and_more(side, grid):
    # a global average pool over 28x28 digits' 7x7 maps gave 0.819 test accuracy on mnist5k
    net = F.Classifier(1, 10, side)
    pooled = net.body[:-3](torch.rand(3, 1, side, side))  # before Flatten, dropout, feature layer
    assert pooled.shape == (3, 128, grid, grid)
    assert net(torch.rand(3, 1, side, side))[0].shape == (3, F.CLASSIFIER_DIM)


def test_the_inference_classifier_gives_the_same_features_and_fids_as_the_trained_one():
    """Issue 29: feature extraction folds each batch norm into its convolution and runs
    channels-last (about half the time on a CPU). Features equal the eval-mode network's to
    float rounding, and FIDs of real-sized sets equal to 1e-6 relative, which the issue
    allows; the trained network is left as it was."""
    torch.manual_seed(0)
    net = F.Classifier(1, 10, 28)
    for m in net.modules():  # batch-norm statistics far from the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    net.eval()
    fast = F.for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(3000, 1, 28, 28, generator=gen)
    fake = (real[:2000] + 0.1 * torch.rand(2000, 1, 28, 28, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        feats = {name: [m(x)[0].double().numpy() for x in (real, fake)]
                 for name, m in (("trained", net), ("fast", fast))}
        logits = [m(real[:10])[1] for m in (net, fast)]
    for a, b in zip(feats["trained"], feats["fast"]):
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    fid = {name: frechet_distance(statistics(r), statistics(f)) for name, (r, f) in feats.items()}
    assert fid["fast"] == pytest.approx(fid["trained"], rel=1e-6) and fid["trained"] > 0


def test_features_on_a_cpu_in_batches_of_cpu_batch_are_those_of_one_large_batch(monkeypatch):
    """Issue 29: on a CPU, extract sends at most CPU_BATCH images at a time through the
    network (a larger batch's maps are each mapped afresh by malloc: ~1.5x slower), and the
    features are those of the batches the caller asked for, to float rounding."""
    torch.manual_seed(0)
    fast = F.for_inference(F.Classifier(1, 10, 28).eval())
    space = F.FeatureSpace("classifier-test", F.CLASSIFIER_DIM, fast, False, "test", "test")
    images = torch.rand(450, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    seen = []

    def counted(x):
        seen.append(len(x))
        return fast(x)
    chunked, _ = F.extract(dataclasses.replace(space, net=counted), images, "cpu", 500)
    assert seen == [F.CPU_BATCH] * 4 + [50]
    monkeypatch.setattr(F, "CPU_BATCH", 10 ** 6)
    whole, _ = F.extract(space, images, torch.device("cpu"), 500)
    assert np.abs(chunked - whole).max() <= 1e-6 * np.abs(whole).max()


def test_asking_for_inception_without_weights_never_falls_back(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(F.NotComputed, match="pt_inception-2015-12-05-6726825d.pth"):
        F.choose_features(digits, "inception", torch.device("cpu"))
    patches = load_dataset("patches")  # no labels: nothing to fall back to, and it says so
    with pytest.raises(F.NotComputed, match="no labels"):
        F.choose_features(patches, "auto", torch.device("cpu"))


def test_evaluate_notes_what_it_cannot_compute_and_names_the_feature_space(
        digits, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS backbone here
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    model = models.build("AE", digits.image_shape, latent_dim=4)
    settings = EvalSettings(metrics=("reconstruction", "fid", "likelihood"), fid_samples=300,
                            densities=("prior", "gmm10"))
    drawn = {}
    out = evaluate(model, digits, torch.device("cpu"), settings, seed=0, drawn=drawn)
    notes = out["notes"]
    assert notes["features"].startswith("classifier-digits")
    # each density's own samples under its own name (they once all went under the last's)
    assert set(drawn) == {"prior", "gmm10"} and not torch.equal(drawn["prior"], drawn["gmm10"])
    assert drawn["prior"].shape == drawn["gmm10"].shape == (300, 4)
    assert "alexnet-owt-7be5be79.pth" in notes["test/lpips"] and "test/lpips" not in out
    assert "decoder likelihood" in notes["eval/nll"]
    for key in ("test/mse", "test/psnr", "test/ssim", "eval/fid_rec", "eval/fid_sample_prior",
                "eval/fid_sample_gmm10", "eval/fid_interp_mid", "eval/fid_interp_rand",
                "eval/precision_rec", "eval/recall_rec", "eval/kid_rec",
                "eval/kid_sample_gmm10", "eval/kid_std_interp_mid"):
        assert math.isfinite(out[key]), key
    assert model.training  # left as it was
    again = evaluate(model, digits, torch.device("cpu"), settings, seed=0)
    assert again["eval/fid_sample_gmm10"] == out["eval/fid_sample_gmm10"]  # seeded


def test_bad_evaluation_settings_are_one_line():
    with pytest.raises(ValueError, match="unknown metric group 'fdi'"):
        EvalSettings(metrics=("fdi",)).validate()
    with pytest.raises(ValueError, match="densities: unknown 'gmm7'"):
        EvalSettings(densities=("gmm7",)).validate()


def test_eval_groups_parse_the_same_for_searches_and_the_evaluate_command():
    from engine.eval.evaluate import GROUPS, parse_groups
    assert parse_groups("all") == GROUPS and parse_groups("none") == ()
    assert parse_groups("fid, latent") == ("fid", "latent")
    assert EvalSettings.from_dict({"metrics": "none"}).metrics == ()


def test_every_group_name_has_its_evaluation_and_the_report_reads_the_same_names():
    """The group names are written once (engine/eval/groups: GROUPS); the runner's table and
    the report's notes take them from there."""
    from engine.eval.evaluate import EVALUATIONS, GROUPS
    assert tuple(EVALUATIONS) == GROUPS
    report = [p.read_text() for p in (ROOT / "engine/report").rglob("*.py")]
    assert not any('"reconstruction", "fid"' in text for text in report)
    assert any("from engine.eval.groups import GROUPS" in text for text in report)


def test_the_classifiers_augmentation_is_the_identity_at_zero_and_shifts_whole_pixels(
        monkeypatch):
    x = torch.rand(5, 1, 28, 28)
    for name in ("AUGMENT_SHIFT", "AUGMENT_DEGREES", "AUGMENT_SCALE"):
        monkeypatch.setattr(F, name, 0.0)
    assert torch.allclose(F.augment(x, torch.Generator().manual_seed(0)), x, atol=1e-5)
    # a shift of exactly one pixel (the draw's extreme: rand = 1 -> +AUGMENT_SHIFT)
    monkeypatch.setattr(F, "AUGMENT_SHIFT", 1 / 28)
    monkeypatch.setattr(torch, "rand", lambda *s, generator=None: torch.ones(*s))
    moved = F.augment(x, torch.Generator())
    assert torch.allclose(moved[..., :-1, :-1], x[..., 1:, 1:], atol=1e-5)  # sampled at +1 px
    assert moved[..., -1, :].abs().max() < 1e-5 and moved[..., :, -1].abs().max() < 1e-5  # zeros
