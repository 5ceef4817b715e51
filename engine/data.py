"""Embedded default data sets, built only from data that ships inside scikit-learn.

Nothing is downloaded: ``digits`` comes from ``sklearn.datasets.load_digits`` and
``patches`` is cut from the two bundled sample photographs. Both are deterministic,
so every run on every machine sees the same train/val/test splits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import sklearn.datasets
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor | None  # (N,) int64, or None where the data set has no labels


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # (C, H, W)

    @property
    def num_classes(self) -> int | None:
        if self.train.labels is None:
            return None
        return int(max(s.labels.max() for s in (self.train, self.val, self.test))) + 1


def _clone(s: Split) -> Split:
    return Split(s.images.clone(), None if s.labels is None else s.labels.clone())


def _memoised_copy(build: Callable[[], Dataset]) -> Callable[[], Dataset]:
    """Build once per process, but hand every caller its own tensors.

    Trials reload the data, so building is cached; the result is cloned because an
    in-place op by one trial (e.g. ``images.sub_(mean)``) would otherwise silently
    corrupt every later trial in the same process. A clone costs ~54 MB / a few ms.
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
    raw = sklearn.datasets.load_digits()
    images = torch.from_numpy(raw.data / 16.0).float().reshape(-1, 1, 8, 8)  # values 0..16
    labels = torch.from_numpy(raw.target).long()
    n = len(labels)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
    n_train, n_val = round(0.70 * n), round(0.15 * n)
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return Dataset("digits", *(Split(images[i], labels[i]) for i in parts))


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
    photos = [_downscale(p) for p in sklearn.datasets.load_sample_images().images]
    splits = []
    for start, stop in band_rows(photos[0].shape[1]):
        images = torch.cat([_cut(p[:, start:stop]) for p in photos])
        splits.append(Split(images, None))
    return Dataset("patches", *splits)


DATASETS: dict[str, Callable[..., Dataset]] = {"digits": load_digits, "patches": load_patches}


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a registered data set by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**kwargs)
