"""The real data sets by name: their titles, image shapes, whether they have labels, the splits
every reader fills, and the errors and the warning their files raise."""
from __future__ import annotations

REAL_DATASETS: tuple[str, ...] = ("mnist", "fashion", "cifar10", "celeba", "celebahq")
SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar10": (3, 32, 32),
    "celeba": (3, 64, 64), "celebahq": (3, 128, 128),
}
LABELLED = {"mnist": True, "fashion": True, "cifar10": True, "celeba": False, "celebahq": False}
TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "cifar10": "CIFAR-10",
          "celeba": "CelebA", "celebahq": "CelebA-HQ"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data set that cannot be read; the message is one line naming the file or folder."""


class DataNotFound(DataError):
    """The data set's files are not where they are expected (and could not be downloaded)."""


class UnofficialFilesWarning(UserWarning):
    """Files whose MD5 differs from the official release: loaded anyway, results may not be
    comparable with the papers'."""


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
