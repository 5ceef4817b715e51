"""The data sets: three embedded ones (digits the default), and the papers' real ones through
torchvision, each loaded by name as a Dataset of train, val and test Splits.

  types.py     Split and Dataset
  embedded.py  the embedded sets (digits, mnist5k, patches): nothing is read from disk or
               downloaded, and every machine sees the same splits
  real/        the real sets (mnist, fashion, cifar10, celeba, celebahq): where their files are
               expected under a data root, their readers (preprocessing, splits), downloads
  cache.py     the real sets decoded once per machine into uint8 .npy files and mapped
               copy-on-write by every trial; where the files are read from (data_root)
  registry.py  loading by name: DATASETS, dataset_shape, check_data, load_dataset,
               embedded_arch
  options.py   a row's data options (noise added to partitions of the images) and the
               partitions' cells

The names other code uses are re-exported here: `from engine.data import load_dataset`.
"""
from __future__ import annotations

from engine.data.cache import CACHE_VERSION, DATA_ROOT_ENV, data_root, load_arrays
from engine.data.embedded import (EMBEDDED_DATASETS, EMBEDDED_SHAPES, MNIST5K_SPLIT, PATCH,
                                  STRIDE, band_rows, load_digits, load_mnist5k, load_patches)
from engine.data.options import (CELLS, LABELLED, NOISE_PARTITIONS, add_noise, apply_options,
                                 cell_masks, check_options, noise_mask)
from engine.data.real import DataError, DataNotFound, UnofficialFilesWarning
from engine.data.registry import (DATASETS, EMBEDDED_ARCH, REAL_DATASETS, check_data,
                                  dataset_shape, embedded_arch, load_dataset)
from engine.data.types import Dataset, Split

__all__ = [
    "Split", "Dataset",
    "EMBEDDED_SHAPES", "EMBEDDED_DATASETS", "MNIST5K_SPLIT", "PATCH", "STRIDE", "band_rows",
    "load_digits", "load_mnist5k", "load_patches",
    "DATA_ROOT_ENV", "CACHE_VERSION", "data_root", "load_arrays",
    "DataError", "DataNotFound", "UnofficialFilesWarning",
    "DATASETS", "REAL_DATASETS", "EMBEDDED_ARCH", "embedded_arch", "dataset_shape", "check_data",
    "load_dataset",
    "CELLS", "NOISE_PARTITIONS", "LABELLED", "cell_masks", "check_options", "noise_mask",
    "add_noise", "apply_options",
]
