"""Where each real data set's files are expected under a data root (torchvision's own layout),
which of them are missing, a fingerprint of what is there, and the one-line DataNotFound
naming them; plus the MD5 check against the official release that the readers warn with.

Where the files are expected (under a data root: --data-root, else $VAE_DATA_ROOT, else
~/data) and how each set is split are the user's to know: docs/data.md has both tables; this
module (the layout) and engine/data/real/readers.py (the splits) are their one source.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from torchvision import datasets as tvd
from torchvision.datasets.utils import calculate_md5

from engine.data.real.catalog import TITLES, DataNotFound, UnofficialFilesWarning

# MNIST and Fashion-MNIST: gzipped (or gunzipped) IDX files in <root>/<torchvision class>/raw
MNIST_CLASSES = {"mnist": tvd.MNIST, "fashion": tvd.FashionMNIST}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# CelebA: the aligned JPEGs and the official partition file in <root>/celeba
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_IMAGES = "img_align_celeba"
# CelebA-HQ: a flat folder of images, <root>/celebahq
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def mnist_raw(name: str, root: Path) -> Path:
    return root / MNIST_CLASSES[name].__name__ / "raw"


def mnist_sources(name: str, root: Path) -> list[Path]:
    """The file each IDX file is read from (the uncompressed one where both exist)."""
    raw, found = mnist_raw(name, root), []
    for f in IDX_FILES:
        for p in (raw / f, raw / f"{f}.gz"):
            if p.is_file():
                found.append(p)
                break
    return found


def cifar_files(root: Path) -> list[Path]:
    folder = root / tvd.CIFAR10.base_folder
    names = [f for f, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list]
    return [folder / f for f in names + [tvd.CIFAR10.meta["filename"]]]


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def celebahq_files(root: Path) -> list[Path]:
    """The folder's image files in natural order (2.jpg before 10.jpg): the split's order."""
    folder = root / "celebahq"
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=_natural_key)


def expected(name: str, root: Path) -> str:
    """Where the files are expected, for the one-line error."""
    if name in MNIST_CLASSES:
        return f"{mnist_raw(name, root)}/ with " + ", ".join(f"{f}[.gz]" for f in IDX_FILES)
    if name == "cifar10":
        return (f"{root / tvd.CIFAR10.base_folder}/ with data_batch_1..5, test_batch, "
                f"batches.meta (cifar-10-python.tar.gz unpacked in {root})")
    if name == "celeba":
        f = root / tvd.CelebA.base_folder
        return f"{f / CELEBA_IMAGES}/000001.jpg..202599.jpg and {f / CELEBA_PARTITION}"
    return (f"{root / 'celebahq'}/ with the images (*.jpg, *.jpeg or *.png, flat, e.g. "
            f"00000.jpg..29999.jpg)")


def missing(name: str, root: Path) -> list[str]:
    """The expected files or folders that are not there (empty: all there). Cheap: stat only."""
    if name in MNIST_CLASSES:
        raw = mnist_raw(name, root)
        return [f"{f}[.gz]" for f in IDX_FILES
                if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    if name == "cifar10":
        return [p.name for p in cifar_files(root) if not p.is_file()]
    if name == "celeba":
        f = root / tvd.CelebA.base_folder
        return ([] if (f / CELEBA_IMAGES).is_dir() else [f"{CELEBA_IMAGES}/"]) + \
               ([] if (f / CELEBA_PARTITION).is_file() else [CELEBA_PARTITION])
    return [] if celebahq_files(root) else ["the images"]


def not_found(name: str, root: Path, why: str) -> DataNotFound:
    gone = ", ".join(missing(name, root))
    return DataNotFound(
        f"{TITLES[name]} not found: expected {expected(name, root)} (missing: {gone}); {why}; "
        f"put the files there, or pass --data-root (or set VAE_DATA_ROOT) to where they are")


def fingerprint(name: str, root: Path) -> list:
    """(path, size, mtime_ns) of what the data set is decoded from: a change to any of these
    files, or an image added to / removed from a folder (the folder's mtime), makes a new
    decode. An image rewritten in place is not noticed: delete the cache folder then."""
    if name in MNIST_CLASSES:
        paths = mnist_sources(name, root)
    elif name == "cifar10":
        paths = cifar_files(root)
    elif name == "celeba":
        f = root / tvd.CelebA.base_folder
        paths = [f / CELEBA_PARTITION, f / CELEBA_IMAGES]
    else:
        paths = [root / "celebahq"]
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p), st.st_size if p.is_file() else None, st.st_mtime_ns])
    return out


def warn_unofficial(name: str, files: list[tuple[Path, str]]) -> None:
    """Warn once (per decode) about present files whose MD5 is not the official one."""
    bad = [p.name for p, md5 in files if p.is_file() and calculate_md5(p) != md5]
    if bad:
        warnings.warn(f"{TITLES[name]}: {', '.join(bad)} differ from the official release "
                      f"(MD5); loading them anyway, but results may not be comparable with "
                      f"published ones", UnofficialFilesWarning, stacklevel=3)
