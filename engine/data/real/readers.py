"""Readers of the real data sets' on-disk formats: MNIST, Fashion-MNIST, CIFAR-10, CelebA and
CelebA-HQ, through torchvision's dataset classes, decoded and preprocessed to uint8 arrays.

engine/data/cache.py caches what these readers return (once per machine) and maps it as the
engine's uint8 `Split`s; nothing here knows about caches or tensors of the engine. Where each
set's files are expected is engine/data/real/files.py's.

Preprocessing (Takida et al. Appendix I; Dai & Wipf; the common practice):
  mnist, fashion  28x28, 1 channel, as stored.
  cifar10         32x32 RGB, as stored.
  celeba          the aligned 178x218 image, centre-cropped to 140x140 (torchvision's
                  CenterCrop: top 39, left 19), resized to 64x64 by PIL's bilinear filter,
                  which is antialiased (torchvision's Resize on a PIL image), RGB.
  celebahq        centre-cropped to a square if it is not one, resized to 128x128 the same
                  way, RGB.

Splits: the official test split where there is one, val the end of the training files (the
same fraction for MNIST's and Fashion-MNIST's files: 1/12), CelebA's official partition file,
and for CelebA-HQ, which has none, the common 27,000 / 3,000 split in natural file order.

torchvision's integrity checks: MNIST checks only that the uncompressed files exist (the MD5s
are those of the .gz downloads and are checked when it downloads); CIFAR10 and CelebA refuse
any file whose MD5 is not the official one, which no re-packed or test file matches. The
classes are used through small subclasses (LenientCIFAR10, LenientCelebA) whose checks are
existence checks; everything else, the parsing included, is torchvision's. Files that differ
from the official release load with an UnofficialFilesWarning (their MD5 is checked once per
machine, when they are decoded), and corrupt or truncated files are caught by the decoding
itself: a DataError of one line naming the file.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import datasets as tvd
from torchvision.datasets.celeba import CSV
from torchvision.transforms import InterpolationMode

from engine.data.real.catalog import SPLITS, TITLES, DataError, one_line
from engine.data.real.files import (CELEBA_IMAGES, CELEBA_PARTITION, IDX_FILES, MNIST_CLASSES,
                                    celebahq_files, cifar_files, mnist_raw, mnist_sources,
                                    warn_unofficial)

CELEBA_CROP, CELEBA_SIZE, CELEBAHQ_SIZE = 140, 64, 128
MNIST_VAL_FRACTION = 1 / 12  # 5,000 of 60,000
CIFAR_VAL_FRACTION = 1 / 10  # 5,000 of 50,000
CELEBAHQ_TEST_FRACTION, CELEBAHQ_VAL_FRACTION = 0.10, 0.05

# An allocator gives the decoder the uint8 array (N, C, H, W) to fill for a split; the caller
# backs it with a file so that CelebA need not fit in memory twice.
Alloc = Callable[[str, int], np.ndarray]


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: gzipped (or gunzipped) IDX files, read by torchvision's MNIST class.
# ---------------------------------------------------------------------------------------------

def _check_idx(path: Path, shown: Path, ndim: int) -> None:
    """The IDX header (magic 0x0000 08 ndim, big-endian uint32 dims) against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim or head[:3] != b"\x00\x00\x08" or head[3] != ndim:
        raise DataError(f"{shown}: not an IDX file of uint8 with {ndim} dimension(s) "
                        f"(header {head[:4].hex() or 'empty'}); the file is corrupt")
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    want = 4 + 4 * ndim + int(np.prod(dims))
    if size != want:
        raise DataError(f"{shown}: {size} bytes where its header {tuple(dims)} needs {want}; "
                        f"the file is truncated or corrupt")


def _gunzip(src: Path, dst: Path) -> None:
    try:
        with gzip.open(src, "rb") as f, open(dst, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{src}: not a readable gzip file ({one_line(e)}); the file is "
                        f"truncated or corrupt") from None


def _decode_mnist(name: str, root: Path, alloc: Alloc) -> dict:
    cls, raw = MNIST_CLASSES[name], mnist_raw(name, root)
    sources = mnist_sources(name, root)
    warn_unofficial(name, [(raw / f, md5) for f, md5 in cls.resources])  # names end in .gz
    # torchvision's MNIST reads only the uncompressed files (its download gunzips the .gz
    # next to them). Where only the .gz files are there, they are gunzipped into a temporary
    # folder in its layout instead: nothing is written into the data root, which may be
    # read-only (a shared cluster folder).
    with tempfile.TemporaryDirectory(prefix="vae-data-") as tmp:
        if all(not p.name.endswith(".gz") for p in sources):
            tv_root = root
        else:
            tv_root = Path(tmp)
            (tv_root / cls.__name__ / "raw").mkdir(parents=True)
            for f, src in zip(IDX_FILES, sources):
                dst = tv_root / cls.__name__ / "raw" / f
                if src.name.endswith(".gz"):
                    _gunzip(src, dst)
                else:
                    os.symlink(src, dst)
        for f, src in zip(IDX_FILES, sources):
            _check_idx(tv_root / cls.__name__ / "raw" / f, src, 3 if "images" in f else 1)
        labels = {}
        for train in (True, False):
            try:
                ds = cls(str(tv_root), train=train, download=False)
                images, targets = ds.data.numpy(), ds.targets.numpy()
            except Exception as e:  # the headers were checked, so this is unexpected
                raise DataError(f"{TITLES[name]} in {raw}: {one_line(e)}") from None
            kind = "train" if train else "t10k"
            if images.shape[1:] != (28, 28) or len(images) != len(targets):
                raise DataError(f"{raw}/{kind}-*: {len(images)} images of "
                                f"{tuple(images.shape[1:])} and {len(targets)} labels, expected "
                                f"as many 28x28 images as labels")
            if len(targets) and (targets.min() < 0 or targets.max() > 9):
                raise DataError(f"{raw}/{kind}-labels-idx1-ubyte: labels outside 0..9")
            if train:
                shown = raw / f"{kind}-images-idx3-ubyte"
                n_val = _held_out(len(images), MNIST_VAL_FRACTION, shown)
                cut = len(images) - n_val
                alloc("train", cut)[:, 0] = images[:cut]
                alloc("val", n_val)[:, 0] = images[cut:]
                labels["train"], labels["val"] = targets[:cut], targets[cut:]
            else:
                alloc("test", len(images))[:, 0] = images
                labels["test"] = targets
    return labels


def _held_out(n: int, fraction: float, shown: Path) -> int:
    if n < 2:
        raise DataError(f"{shown}: {n} training image(s), too few to hold a validation part out")
    return min(n - 1, max(1, round(n * fraction)))


# ---------------------------------------------------------------------------------------------
# CIFAR-10: Python pickles of dicts, read by torchvision's CIFAR10 class.
# ---------------------------------------------------------------------------------------------

class LenientCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10 with existence checks instead of its MD5 checks (MD5 None is
    torchvision's own 'exists' check), so that files which are not byte-identical to the
    official release (a re-packed copy, the tests' tiny files) load through the same parsing.
    The download keeps the archive's MD5. _decode_cifar10 warns about other MD5s."""
    train_list = [[f, None] for f, _ in tvd.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


def _cifar_culprit(root: Path) -> Path | None:
    """The first batch file that does not unpickle to CIFAR's dict (after an error)."""
    for p in cifar_files(root):
        try:
            with open(p, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            key = "label_names" if p.name == "batches.meta" else "data"
            if not isinstance(entry, dict) or key not in entry:
                return p
        except Exception:
            return p
    return None


def _decode_cifar10(name: str, root: Path, alloc: Alloc) -> dict:
    folder = root / LenientCIFAR10.base_folder
    official = tvd.CIFAR10.train_list + tvd.CIFAR10.test_list
    warn_unofficial(name, [(folder / f, md5) for f, md5 in official]
                     + [(folder / tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["md5"])])
    labels = {}
    for train in (True, False):
        try:
            ds = LenientCIFAR10(str(root), train=train, download=False)
        except Exception as e:
            culprit = _cifar_culprit(root)
            where = culprit if culprit is not None else folder
            raise DataError(f"{where}: not a readable CIFAR-10 batch ({one_line(e)}); the file "
                            f"is truncated or corrupt") from None
        images, targets = np.asarray(ds.data), np.asarray(ds.targets)
        shown = folder / ("data_batch_1..5" if train else "test_batch")
        if (images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3)
                or len(images) != len(targets)):
            raise DataError(f"{shown}: {len(images)} images of {images.dtype} {images.shape[1:]} "
                            f"and {len(targets)} labels, expected as many rows of 3,072 uint8 "
                            f"as labels")
        if len(targets) and (targets.min() < 0 or targets.max() > 9):
            raise DataError(f"{shown}: labels outside 0..9")
        images = images.transpose(0, 3, 1, 2)  # torchvision's HWC back to CHW
        targets = targets.astype(np.int64)
        if train:
            cut = len(images) - _held_out(len(images), CIFAR_VAL_FRACTION, shown)
            alloc("train", cut)[:] = images[:cut]
            alloc("val", len(images) - cut)[:] = images[cut:]
            labels["train"], labels["val"] = targets[:cut], targets[cut:]
        else:
            alloc("test", len(images))[:] = images
            labels["test"] = targets
    return labels


# ---------------------------------------------------------------------------------------------
# CelebA: the aligned JPEGs and the official partition file, read by torchvision's CelebA.
# ---------------------------------------------------------------------------------------------

class LenientCelebA(tvd.CelebA):
    """torchvision's CelebA needing only what an unconditional model uses: the images and the
    official partition file. torchvision checks the MD5 of all five annotation files and
    parses all of them whatever target_type is; here the check is that the partition file
    and the image folder exist, and the four annotation tables (attributes, identities,
    boxes, landmarks), which target_type=[] never returns, are empty tables of the right
    length, so they need not be on disk. Parsing the partition file, choosing the split and
    opening each image (__getitem__) are torchvision's."""

    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return (os.path.isfile(os.path.join(folder, CELEBA_PARTITION))
                and os.path.isdir(os.path.join(folder, CELEBA_IMAGES)))

    def _load_csv(self, filename: str, header: int | None = None) -> CSV:
        if filename == CELEBA_PARTITION:
            self._partition = super()._load_csv(filename, header)
            return self._partition
        n = len(self._partition.index)
        return CSV([], self._partition.index, torch.empty((n, 0), dtype=torch.long))


def _celeba_transform(img: Image.Image) -> torch.Tensor:
    """Aligned CelebA image -> (3, 64, 64) uint8: centre crop 140x140, bilinear (antialiased)
    resize to 64x64 (Takida et al., Appendix I.2)."""
    img = TF.center_crop(img.convert("RGB"), [CELEBA_CROP, CELEBA_CROP])
    img = TF.resize(img, [CELEBA_SIZE, CELEBA_SIZE], InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(img)


def _celebahq_image(path: Path) -> torch.Tensor:
    """An image file -> (3, 128, 128) uint8: centre-cropped to a square, bilinear
    (antialiased) resize to 128x128."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    img = TF.center_crop(img, [min(img.size)] * 2)
    img = TF.resize(img, [CELEBAHQ_SIZE, CELEBAHQ_SIZE], InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(img)


def _threads(n: int) -> int:
    return 1 if n < 256 else min(8, os.cpu_count() or 1)


def _fill(out: np.ndarray, n: int, decode: Callable[[int], torch.Tensor],
          path_of: Callable[[int], Path]) -> None:
    """out[i] = decode(i) for i < n on a few threads (PIL releases the GIL while it decodes
    and resizes), with a DataError naming the file of the first image that fails."""
    def one(i: int) -> None:
        try:
            x = decode(i)
        except Exception as e:
            raise DataError(f"{path_of(i)}: not a readable image ({one_line(e)}); the file is "
                            f"truncated or corrupt") from None
        out[i] = x.numpy()

    if _threads(n) == 1:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(_threads(n)) as pool:
            for _ in pool.map(one, range(n)):
                pass


def _decode_celeba(name: str, root: Path, alloc: Alloc) -> dict:
    folder = root / LenientCelebA.base_folder
    md5s = {f: md5 for _, md5, f in tvd.CelebA.file_list}
    warn_unofficial(name, [(folder / CELEBA_PARTITION, md5s[CELEBA_PARTITION])])
    for split, tv_split in zip(SPLITS, ("train", "valid", "test")):
        try:
            ds = LenientCelebA(str(root), split=tv_split, target_type=[],
                         transform=_celeba_transform, download=False)
            n = len(ds)
        except Exception as e:
            raise DataError(f"{folder / CELEBA_PARTITION}: not a readable partition file (lines "
                            f"'000001.jpg 0'; {one_line(e)})") from None
        if n == 0:
            raise DataError(f"{folder / CELEBA_PARTITION}: no image in the {tv_split!r} partition")
        out = alloc(split, n)
        _fill(out, n, lambda i: ds[i][0], lambda i: folder / CELEBA_IMAGES / ds.filename[i])
    return {s: None for s in SPLITS}


# ---------------------------------------------------------------------------------------------
# CelebA-HQ: a flat folder of images (torchvision has no class for it).
# ---------------------------------------------------------------------------------------------

def _decode_celebahq(name: str, root: Path, alloc: Alloc) -> dict:
    files = celebahq_files(root)
    n = len(files)
    if n < 3:
        raise DataError(f"{root / 'celebahq'}: {n} image(s), too few for train, val and test")
    n_test = max(1, round(n * CELEBAHQ_TEST_FRACTION))
    n_val = max(1, round(n * CELEBAHQ_VAL_FRACTION))
    n_train = n - n_val - n_test
    start = 0
    for split, count in zip(SPLITS, (n_train, n_val, n_test)):
        part = files[start: start + count]
        _fill(alloc(split, count), count, lambda i: _celebahq_image(part[i]), lambda i: part[i])
        start += count
    return {s: None for s in SPLITS}


DECODERS: dict[str, Callable[[str, Path, Alloc], dict]] = {
    "mnist": _decode_mnist, "fashion": _decode_mnist, "cifar10": _decode_cifar10,
    "celeba": _decode_celeba, "celebahq": _decode_celebahq,
}
