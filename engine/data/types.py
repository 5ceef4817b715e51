"""The engine's data types: a Split (images and labels) and a Dataset (train, val, test)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import models


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
