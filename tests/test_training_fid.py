"""The cheap FID logged during training (engine/eval/training_fid.py): val/fid_rec every few
epochs and at the last, against an independent computation (raw features standardized by
hand, scipy's matrix square root), and not at all where the trial evaluates no FID."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import models
from engine.data import load_dataset
from engine.eval.metrics.features import choose_features, extract
from engine.eval.training_fid import TRAINING_FID_IMAGES, due
from test_trial import params, run


def _fid_by_hand(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's formula with scipy's sqrtm, on features standardized by `real`'s mean and
    total s.d."""
    mu, scale = real.mean(0), np.sqrt(np.trace(np.cov(real, rowvar=False)) / real.shape[1])
    a, b = (real - mu) / scale, (fake - mu) / scale
    m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_every_few_epochs_and_at_the_last_equal_to_an_independent_fid(tmp_path):
    p = params(epochs=3, evaluation={"metrics": ["fid"], "densities": ["prior"],
                                     "fid_samples": 300, "train_fid_every": 2})
    rec = run(p, tmp_path / "trial")
    got = [r.get("val/fid_rec") for r in rec.reports]
    assert got[0] is None and all(isinstance(v, float) for v in got[1:])  # epochs 2 and 3
    data = load_dataset("digits")
    model = models.build(models.resolve(p["config"]), data.image_shape)
    model.load_state_dict(rec.states[-1]["model"])
    model.eval()
    space = choose_features(data, "auto", "cpu", reference_split=None)  # raw features
    images = data.val.images[:TRAINING_FID_IMAGES]
    with torch.no_grad():
        recs = model.reconstruct(models.float_images(images, "cpu"))
    real, _ = extract(space, data.val.images, "cpu")
    fake, _ = extract(space, recs, "cpu")
    assert got[-1] == pytest.approx(_fid_by_hand(real, fake), rel=1e-6)


def test_no_training_fid_without_the_fid_group_or_at_every_0(tmp_path):
    rec = run(params(epochs=2), tmp_path / "a")  # reconstruction only
    assert all("val/fid_rec" not in r for r in rec.reports)
    assert due(4, 2, False) and due(3, 2, True) and not due(3, 2, False)
    assert not due(4, 0, True)  # 0: never, not even at the last
