"""The papers' real data sets (MNIST, Fashion-MNIST, CIFAR-10, CelebA, CelebA-HQ) read from
their files under a data root:

  catalog.py  the sets by name: titles, image shapes, labels, splits; DataError, DataNotFound,
              UnofficialFilesWarning
  files.py    where each set's files are expected (torchvision's layout), which are missing,
              a fingerprint of what is there, the MD5 check against the official release
  readers.py  the decoders of each on-disk format to uint8 arrays (preprocessing and splits)
  fetch.py    downloading the files where the machine has a network

engine/data/cache.py decodes a set once per machine through DECODERS and maps the result;
nothing in this package knows about caches or the engine's tensors.
"""
from __future__ import annotations

import importlib

from engine.data.real.catalog import (
    LABELLED, REAL_DATASETS, SHAPES, SPLITS, TITLES, DataError, DataNotFound,
    UnofficialFilesWarning)

# The modules that import torchvision (~2 s) are imported where one of their names is first
# used (PEP 562), so that a search on an embedded set never imports torchvision for its data.
_LAZY = {"download": "fetch", "reachable": "fetch", "celebahq_files": "files",
         "expected": "files", "fingerprint": "files", "missing": "files", "not_found": "files",
         "DECODERS": "readers"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

__all__ = ["REAL_DATASETS", "SHAPES", "LABELLED", "TITLES", "SPLITS", "DataError", "DataNotFound",
           "UnofficialFilesWarning", "DECODERS", "celebahq_files", "expected", "missing",
           "fingerprint", "not_found", "reachable", "download"]
