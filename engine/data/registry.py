"""The data sets by name: DATASETS (name -> loader), the checks of a name and of its files, the
loading entry point, and what arch="auto" builds on an embedded set."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from engine.data import real
from engine.data.cache import RealLoader, data_root, ensure_files, machine_lock
from engine.data.embedded import EMBEDDED_SHAPES, load_digits, load_mnist5k, load_patches
from engine.data.types import Dataset

REAL_DATASETS: tuple[str, ...] = real.REAL_DATASETS  # need files under a data root

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits, "mnist5k": load_mnist5k, "patches": load_patches,
    **{name: RealLoader(name) for name in real.REAL_DATASETS},
}

# What arch="auto" builds on an embedded set where the image size's own pick would not fit its
# default run's time on 2 CPU cores: on mnist5k's 28x28 images conv28 takes ~30x an MLP's time
# per step (see docs/data.md); the papers' conv nets are `--set arch=conv28` away.
EMBEDDED_ARCH = {"mnist5k": "mlp"}


def embedded_arch(cfg, dataset: str):
    """`cfg` (a models.Config) with arch="auto" made EMBEDDED_ARCH's pick on `dataset`;
    any other cfg, or data set, unchanged."""
    return cfg.with_default_arch(EMBEDDED_ARCH[dataset]) if dataset in EMBEDDED_ARCH else cfg


def known(name: str) -> None:
    """Raise ValueError (one line, the known names) unless name is a data set of DATASETS."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")


def dataset_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of name's images, without reading any file."""
    known(name)
    return EMBEDDED_SHAPES.get(name) or real.SHAPES[name]


def check_data(name: str, root: str | os.PathLike | None = None, *, download: bool = True
               ) -> Path | None:
    """Check that name's files are where they are expected (root: the argument, else
    $VAE_DATA_ROOT, else ~/data), downloading them there if they are missing, download is
    True and the machine has a network (under the same lock as loading). Returns the data
    root (None for an embedded data set, which needs no files). Raises DataNotFound, one line
    naming the expected files and folder, without waiting on a network that is not there.
    Stat calls only: corrupt files are found when the data set is first decoded."""
    known(name)
    if name in EMBEDDED_SHAPES:
        return None
    root_path = data_root(root)
    if real.missing(name, root_path):
        with machine_lock(name, root_path):
            ensure_files(name, root_path, download)
    return root_path


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = True
                 ) -> Dataset:
    """Load a registered data set by name.

    Embedded ones (digits, mnist5k, patches) ignore root and download. Real ones (mnist, fashion,
    cifar10, celeba, celebahq) are read from root (else $VAE_DATA_ROOT, else ~/data),
    downloaded there first if missing and possible (see check_data), decoded once per machine
    and returned as uint8 tensors mapped copy-on-write from that machine's cache (see
    engine/data/cache.py). Raises DataNotFound or DataError (both ValueErrors) with one line
    naming the file or folder.
    """
    known(name)
    if name in EMBEDDED_SHAPES:
        return DATASETS[name]()
    return DATASETS[name](root, download=download)
