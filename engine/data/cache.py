"""The on-disk cache of the real data sets: each is decoded once per machine (by the readers of
engine/data/real/) into uint8 .npy files in the cache folder (engine.files.cache_dir():
$VAE_ABLATIONS_CACHE, else ~/.cache/vae-ablations, under data/), under a file lock so that
trials starting together decode it once; every trial then maps those files (copy-on-write,
_private_map), so the operating system's page cache holds the one copy per machine and a trial
none of its own: the trial reads its batches from the map and converts each to float32 on its
device (models.float_images). Converting the whole set to float32 in every trial would take
four times the bytes, on the host and again on its GPU:

  data set   image        train / val / test          uint8       float32 per trial
  mnist      1x28x28      55,000 / 5,000 / 10,000       54.9 MB      219.5 MB
  fashion    1x28x28      55,000 / 5,000 / 10,000       54.9 MB      219.5 MB
  cifar10    3x32x32      45,000 / 5,000 / 10,000      184.3 MB      737.3 MB
  celeba     3x64x64     162,770 / 19,867 / 19,962     2,489.5 MB    9,958.1 MB
  celebahq   3x128x128    25,500 / 1,500 / 3,000      1,474.6 MB    5,898.2 MB

(MB = 10^6 bytes.) Decoding, once per machine, on up to 8 threads: MNIST, Fashion-MNIST and
CIFAR-10 take seconds; CelebA ~0.44 ms of one core per image (~90 core-seconds); CelebA-HQ
from 1024x1024 JPEGs ~28 ms per image (~14 core-minutes), far less from 256x256 copies.

Also where the files are read from (data_root: the argument, else $VAE_DATA_ROOT, else
~/data), and their download there (ensure_files), under the same lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from engine.data import real
from engine.data.types import Dataset, Split
from engine.files import cache_dir

DATA_ROOT_ENV = "VAE_DATA_ROOT"
CACHE_VERSION = 1  # bump when a reader's preprocessing or split changes


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where the real data sets are read from: root, else $VAE_DATA_ROOT, else ~/data."""
    chosen = root if root not in (None, "") else os.environ.get(DATA_ROOT_ENV) or "~/data"
    return Path(chosen).expanduser().absolute()


def _data_cache() -> Path:
    return cache_dir() / "data"


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def ensure_files(name: str, root: Path, download: bool) -> None:
    """Make sure name's files are in root: download them there if any is missing and download
    is True, else raise DataNotFound (one line). Called under machine_lock."""
    if real.missing(name, root):
        if not download:
            raise real.not_found(name, root, "download=False")
        real.download(name, root)


def _decode_to_cache(name: str, root: Path, folder: Path) -> None:
    """Decode name into folder (absent), via a temporary sibling renamed into place."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shape, arrays = real.SHAPES[name], []

    def alloc(split: str, n: int) -> np.ndarray:
        arr = np.lib.format.open_memmap(tmp / f"{split}-images.npy", mode="w+",
                                        dtype=np.uint8, shape=(n, *shape))
        arrays.append(arr)
        return arr

    try:
        labels = real.DECODERS[name](name, root, alloc)
        for arr in arrays:
            arr.flush()
        del arrays[:]
        for split, lab in labels.items():
            if lab is not None:
                np.save(tmp / f"{split}-labels.npy", np.asarray(lab, dtype=np.int64))
        info = {"name": name, "root": str(root), "version": CACHE_VERSION,
                "sources": real.fingerprint(name, root)}
        (tmp / "source.json").write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, folder)
    except BaseException:
        del arrays[:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tag(name: str, root: Path) -> str:
    """The cache folders' prefix of name read from root (folder: tag-<sources' digest>)."""
    return f"{name}-{_digest([str(root), CACHE_VERSION])}"


def machine_lock(name: str, root: Path):
    """The machine-wide lock under which name is downloaded into root and decoded."""
    base = _data_cache()
    base.mkdir(parents=True, exist_ok=True)
    return FileLock(str(base / f"{_tag(name, root)}.lock"))


def _prepare(name: str, root: Path, download: bool) -> Path:
    """The cache folder of name read from root, decoding it first if no process on this
    machine has yet (one at a time, under machine_lock)."""
    base, tag = _data_cache(), _tag(name, root)

    def folder() -> Path:
        return base / f"{tag}-{_digest(real.fingerprint(name, root))}"

    if not real.missing(name, root) and folder().is_dir():
        return folder()  # the common case: decoded before, no lock needed
    with machine_lock(name, root):
        ensure_files(name, root, download)  # downloads at most once per machine, too
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
        for split in real.SPLITS:
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


class RealLoader:
    """load_<name>(root=None, *, download=True) -> Dataset of uint8 tensors mapped from the
    machine's cache, each call its own copy-on-write map (so one trial's in-place edit cannot
    reach another's)."""

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = name
        shape = "x".join(map(str, real.SHAPES[name]))
        self.__doc__ = f"{real.TITLES[name]}, {shape} images: see engine/data/real/."

    def __call__(self, root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
        arrays = load_arrays(self.name, root, download=download)
        splits = []
        for split in real.SPLITS:
            images, labels = arrays[split]
            splits.append(Split(_private_map(images),
                                None if labels is None else torch.from_numpy(labels.copy())))
        return Dataset(self.name, *splits)

    @staticmethod
    def cache_clear() -> None:
        _OPENED.clear()

    def __repr__(self) -> str:
        return f"<loader of {self.name}>"
