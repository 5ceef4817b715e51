"""The data options of a row (params["data"]): Gaussian noise added to partitions of the
images (Takida et al. Sec. 5.3), checked before any trial starts and applied to the data set a
row trains and is evaluated on; and the cells of those partitions, which the evaluation also
reports by."""
from __future__ import annotations

import numpy as np
import torch

from engine.data import real
from engine.data.registry import known
from engine.data.types import Dataset, Split

# Takida Sec. 5.3: the images are cut two ways, by label into "small" (the lower half of the
# classes, digits 0-4) and "big" (5-9), and by pixel rows into the upper and lower half of the
# image; the four intersections are the cells SU, SL, BU, BL. A pattern names the cells that
# get noise.
CELLS = ("SU", "SL", "BU", "BL")
NOISE_PARTITIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("SU", "SL", "BU", "BL"),
    "spatial": ("SU", "BU"),  # the upper half of every image
    "conditional": ("SU", "SL"),  # every pixel of the images labelled 0-4
    "spatial-conditional": ("SU",),  # the upper half of the images labelled 0-4
}
LABELLED = {"digits": True, "mnist5k": True, "patches": False, **real.LABELLED}


def cell_masks(split: Split, num_classes: int | None) -> dict[str, torch.Tensor]:
    """cell -> boolean mask (N, 1, H, 1), broadcastable to the split's images (N, C, H, W):
    SU, SL, BU, BL (label < num_classes / 2 is "small"; rows < H // 2 are "upper"), or only
    U and L for a split without labels."""
    n, height = len(split.images), split.images.shape[2]
    upper = (torch.arange(height) < height // 2).view(1, 1, height, 1)
    rows = {"U": upper, "L": ~upper}
    if split.labels is None or num_classes is None:
        return {k: v.expand(n, 1, height, 1) for k, v in rows.items()}
    small = (split.labels < num_classes / 2).view(n, 1, 1, 1)
    groups = {"S": small, "B": ~small}
    return {g + r: groups[g] & rows[r] for g in "SB" for r in "UL"}


def check_options(options, dataset: str) -> None:
    """Raise ValueError (one line) unless `options` is None or {"noise": spec} with spec
    {"partition": one of NOISE_PARTITIONS, "variance": s_x^2 > 0, "seed": int >= 0 (0)}
    and the partition can be made on `dataset` (a label-dependent one needs labels)."""
    if options is None:
        return
    if not isinstance(options, dict) or set(options) - {"noise"}:
        raise ValueError(f"data options {options!r}: expected {{'noise': {{...}}}}")
    noise = options.get("noise")
    if noise is None:
        return
    if not isinstance(noise, dict) or set(noise) - {"partition", "variance", "seed"}:
        raise ValueError(f"noise {noise!r}: expected a dict of partition, variance and seed")
    part = noise.get("partition")
    if part not in NOISE_PARTITIONS:
        raise ValueError(f"noise partition {part!r}: use one of {', '.join(NOISE_PARTITIONS)}")
    var = noise.get("variance")
    if (not isinstance(var, (int, float)) or isinstance(var, bool) or not np.isfinite(var)
            or var <= 0):
        raise ValueError(f"noise variance {var!r}: must be a finite number > 0")
    seed = noise.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"noise seed {seed!r}: must be an integer >= 0")
    known(dataset)
    if _splits_by_label(part) and not LABELLED[dataset]:
        raise ValueError(f"noise partition {part!r} splits the images by label, and {dataset} "
                         "has no labels; use uniform or spatial")


def _splits_by_label(partition: str) -> bool:
    """Whether the pattern's cells hold some labels' images and not the others'."""
    return {c[0] for c in NOISE_PARTITIONS[partition]} != {"S", "B"}


def noise_mask(split: Split, num_classes: int | None, partition: str) -> torch.Tensor:
    """The pixels the pattern puts noise on: boolean (N, 1, H, 1), the union of its cells."""
    masks = cell_masks(split, num_classes)
    if split.labels is None:  # only U and L: a pattern that does not split by label
        return sum((masks[r] for r in {c[1] for c in NOISE_PARTITIONS[partition]}),
                   torch.zeros_like(masks["U"])).bool()
    return sum((masks[c] for c in NOISE_PARTITIONS[partition]),
               torch.zeros_like(masks["SU"])).bool()


def add_noise(data: Dataset, noise: dict) -> Dataset:
    """The data set with N(0, s_x^2) noise added to the pixels of the pattern's cells, in
    every split, fixed (drawn once, not per epoch) and not clipped to [0, 1]:

        x' = x + sqrt(s_x^2) * e * mask,  e = default_rng([seed, k]).standard_normal(x.shape)

    with k = 0, 1, 2 for train, val, test (numpy's generator, float64 draws cast to float32).
    Named "<name>-noise-<partition>-<s_x^2>-s<seed>", so caches keyed by name tell it apart."""
    part, var, seed = noise["partition"], float(noise["variance"]), noise.get("seed", 0)
    splits = []
    for k, split in enumerate((data.train, data.val, data.test)):
        if _splits_by_label(part) and split.labels is None:
            raise ValueError(f"noise partition {part!r} splits the images by label, and "
                             f"{data.name} has no labels")
        mask = noise_mask(split, data.num_classes, part)
        e = torch.from_numpy(np.random.default_rng([seed, k]).standard_normal(
            tuple(split.images.shape))).float()
        # float32, not 8-bit codes: the one data set held as floats whatever its source
        splits.append(Split(split.float() + var ** 0.5 * e * mask, split.labels))
    return Dataset(f"{data.name}-noise-{part}-{var:g}-s{seed}", *splits)


def apply_options(data: Dataset, options: dict | None) -> Dataset:
    """The data set a row trains and is evaluated on: `data`, changed by the row's data
    options (params["data"]: None, or {"noise": spec}, see check_options)."""
    if options and options.get("noise"):
        return add_noise(data, options["noise"])
    return data
