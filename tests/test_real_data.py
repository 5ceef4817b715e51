"""Tests for the real data sets (engine/data/real/, engine/data/cache.py): tiny files in each data
set's real on-disk format are written into a temporary root and loaded through the same code
a user runs (torchvision's classes, the per-machine .npy cache, the float32 conversion)."""

import gzip
import io
import pickle
import socket
import struct
import threading
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.celeba as tv_celeba
import torchvision.datasets.mnist as tv_mnist
import torchvision.datasets.utils as tv_utils
from PIL import Image

import models
from engine import data
from engine.data import cache
from engine.data import real as datasets
from engine.data.real import fetch
from engine.data import (DATASETS, DataError, DataNotFound, UnofficialFilesWarning, check_data,
                         dataset_shape, load_arrays, load_dataset)
from models.networks import auto_arch

REAL = ("mnist", "fashion", "cifar10", "celeba", "celebahq")
# The tiny files are not the official ones: the loaders say so once per decode.
pytestmark = pytest.mark.filterwarnings("ignore::engine.data.real.UnofficialFilesWarning")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A fresh per-machine cache per test, no in-process memo, and no network at all: any
    attempt to connect or download fails the test loudly instead of hanging."""
    monkeypatch.setenv("VAE_ABLATIONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAE_DATA_ROOT", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    cache._OPENED.clear()

    def no_network(*a, **k):
        raise OSError("network is unreachable (test)")

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for mod, fn in [(tv_mnist, "download_and_extract_archive"), (tv_cifar, "download_and_extract_archive"),
                    (tv_celeba, "download_file_from_google_drive"), (tv_utils, "download_url")]:
        monkeypatch.setattr(mod, fn, no_download)
    yield
    cache._OPENED.clear()


# ------------------------------------------------------------------------------------------
# Writers of the real formats.
# ------------------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: magic 0x00000803 (uint8, 3 dims) or 0x00000801 (1 dim), big-endian uint32 dims."""
    return struct.pack(">I", 0x800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, n_train=24, n_test=6, seed=0, gz=True) -> dict:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    arrays["train-images-idx3-ubyte"][0, 0, :3] = (0, 255, 128)  # the extremes for sure
    for name, arr in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        else:
            (raw / name).write_bytes(idx_bytes(arr))
    return arrays


class Py2Str(bytes):
    """Pickled as a Python 2 str (opcode U / T), as in the official CIFAR-10 batches, which
    were pickled by Python 2: torchvision loads them with encoding="latin1"."""


class Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256
                    else pickle.BINSTRING + struct.pack("<i", n)) + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2_str

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:  # numpy's own reduce, with the buffer as a Python 2 str
            return (np.ndarray.__reduce__(obj)[0], (np.ndarray, (0,), Py2Str(b"b")),
                    (1, obj.shape, obj.dtype, False, Py2Str(obj.tobytes())))
        return NotImplemented


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_cifar(root: Path, per_batch=4, n_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        d = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        (folder / name).write_bytes(py2_pickle({
            Py2Str(b"batch_label"): Py2Str(name.encode()), Py2Str(b"labels"): labels,
            Py2Str(b"data"): d, Py2Str(b"filenames"): [Py2Str(b"x_%d.png" % i) for i in range(n)]}))
        out[name] = (d, labels)
    names = [Py2Str(c) for c in (b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                 b"frog", b"horse", b"ship", b"truck")]
    (folder / "batches.meta").write_bytes(py2_pickle(
        {Py2Str(b"num_cases_per_batch"): per_batch, Py2Str(b"label_names"): names,
         Py2Str(b"num_vis"): 3072}))
    return out


# CelebA: 178x218 aligned images; the centre 140x140 (rows 39..178, columns 19..158) is what
# the crop keeps. Each image: a bright square of its own grey level there, on black.
TOP, LEFT, CROP = 39, 19, 140
PARTITION = [0, 2, 0, 1, 0, 1, 2]  # interleaved, so the split must come from the file
LEVEL = [60 + 25 * i for i in range(len(PARTITION))]


def celeba_image(level: int) -> np.ndarray:
    img = np.zeros((218, 178, 3), np.uint8)
    img[TOP:TOP + CROP, LEFT:LEFT + CROP] = level
    return img


RAMP = np.round(np.arange(CROP) * 255 / (CROP - 1)).astype(np.uint8)  # 0..255 across the crop
STRIPES = (np.arange(CROP) % 2 * 255).astype(np.uint8)  # 1-px columns: black, white, ...


def write_celeba(root: Path, patterns: dict | None = None) -> Path:
    """CelebA's layout; patterns: image index -> a row of 140 grey levels filling the crop."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, part in enumerate(PARTITION):
        name = f"{i + 1:06d}.jpg"
        img = celeba_image(LEVEL[i])
        if patterns and i in patterns:
            img[TOP:TOP + CROP, LEFT:LEFT + CROP] = patterns[i][None, :, None]
        Image.fromarray(img).save(folder / "img_align_celeba" / name, quality=95)
        lines.append(f"{name} {part}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_celebahq(root: Path, n=20, size=160) -> Path:
    folder = root / "celebahq"
    folder.mkdir(parents=True)
    for i in range(n):  # 0.png .. 19.png: natural order differs from the lexicographic one
        Image.fromarray(np.full((size, size, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


WRITERS = {"mnist": lambda r: write_mnist(r, "MNIST"), "fashion": lambda r: write_mnist(r, "FashionMNIST"),
           "cifar10": write_cifar, "celeba": write_celeba, "celebahq": write_celebahq}
COUNTS = {"mnist": (22, 2, 6), "fashion": (22, 2, 6), "cifar10": (18, 2, 5),
          "celeba": (3, 2, 2), "celebahq": (17, 1, 2)}


# ------------------------------------------------------------------------------------------
# Loading, preprocessing, splits.
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL)
def test_loads_shapes_ranges_counts_and_picks_the_network(name, tmp_path):
    WRITERS[name](tmp_path / "d")
    ds = load_dataset(name, root=tmp_path / "d")
    assert ds.name == name
    assert ds.image_shape == dataset_shape(name) == datasets.SHAPES[name]
    for split, n in zip(("train", "val", "test"), COUNTS[name]):
        s = getattr(ds, split)
        assert s.images.shape == (n, *ds.image_shape) and s.images.dtype == torch.uint8
        assert 0.0 <= s.float().min() and s.float().max() <= 1.0
        if name in ("mnist", "fashion", "cifar10"):
            assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
        else:
            assert s.labels is None
    side = ds.image_shape[-1]
    assert auto_arch(ds.image_shape) == f"conv{side}"
    assert models.build("AE", ds.image_shape).arch == f"conv{side}"


def test_auto_arch_for_every_real_shape():
    assert {n: auto_arch(dataset_shape(n)) for n in REAL} == {
        "mnist": "conv28", "fashion": "conv28", "cifar10": "conv32",
        "celeba": "conv64", "celebahq": "conv128"}
    assert dataset_shape("digits") == (1, 8, 8) and dataset_shape("patches") == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_shape("nope")


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "gunzipped"])
def test_mnist_pixels_labels_and_split_are_exact(tmp_path, gz):
    arrays = write_mnist(tmp_path, "MNIST", n_train=36, n_test=7, gz=gz)
    ds = load_dataset("mnist", root=tmp_path)
    tr, trl = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    as_float = lambda a: torch.from_numpy(a.astype(np.float32)) / 255
    # val is the last 1/12 of the training file (5,000 of 60,000): here 3 of 36
    assert torch.equal(ds.train.float()[:, 0], as_float(tr[:33]))
    assert torch.equal(ds.val.float()[:, 0], as_float(tr[33:]))
    assert torch.equal(ds.test.float()[:, 0], as_float(arrays["t10k-images-idx3-ubyte"]))
    assert ds.train.labels.tolist() == trl[:33].tolist() and ds.val.labels.tolist() == trl[33:].tolist()
    assert ds.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert torch.equal(ds.train.float()[0, 0, 0, :3], torch.tensor([0.0, 255.0, 128.0]) / 255)
    assert not list((tmp_path / "MNIST" / "raw").glob("*-ubyte")) or not gz  # root untouched


def test_cifar10_pixels_labels_and_split_are_exact(tmp_path):
    raw = write_cifar(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    train = np.concatenate([raw[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((raw[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    chw = lambda a: torch.from_numpy(a.reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(ds.train.float(), chw(train[:18]))  # row = 1024 R, 1024 G, 1024 B
    assert torch.equal(ds.val.float(), chw(train[18:]))  # the last 1/10 (5,000 of 50,000)
    assert torch.equal(ds.test.float(), chw(raw["test_batch"][0]))
    assert ds.train.labels.tolist() + ds.val.labels.tolist() == labels
    assert ds.test.labels.tolist() == raw["test_batch"][1]
    assert ds.num_classes <= 10


def test_cifar_test_pickles_are_python2_style(tmp_path):
    write_cifar(tmp_path)
    head = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()[:40]
    assert head.startswith(b"\x80\x02}q\x00(U\x0bbatch_labelq")  # as in the official files
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert set(pickle.load(f, encoding="bytes")) == {b"batch_label", b"labels", b"data", b"filenames"}


def test_celeba_official_partition_and_centre_crop(tmp_path):
    write_celeba(tmp_path)
    ds = load_dataset("celeba", root=tmp_path)
    for split, part in (("train", 0), ("val", 1), ("test", 2)):
        images = getattr(ds, split).float()
        levels = [LEVEL[i] for i, p in enumerate(PARTITION) if p == part]
        assert len(images) == len(levels)
        for img, level in zip(images, levels):
            # the crop keeps exactly the bright square: uniform up to the image's very edge
            # (a crop off by 2 px, or larger than 140, would darken the border pixels)
            assert (img * 255 - level).abs().max() < 6, (split, level)


def test_celeba_crop_is_140_and_resize_is_antialiased_bilinear(tmp_path):
    write_celeba(tmp_path, patterns={0: RAMP, 1: STRIPES})  # train[0] and test[0]
    ds = load_dataset("celeba", root=tmp_path)
    ramp, stripes = ds.train.float()[0] * 255, ds.test.float()[0] * 255  # (3, 64, 64)
    # the 140-px ramp resized to 64: column j is centred on source x = (j + .5) * 140/64 - .5
    x = (torch.arange(64) + 0.5) * CROP / 64 - 0.5
    want = x * 255 / (CROP - 1)
    assert (ramp.mean(dim=(0, 1)) - want).abs().max() < 4  # a 128 crop is 20 off at the edges
    assert (ramp - ramp.mean(dim=1, keepdim=True)).abs().max() < 4  # the same in every row
    # 1-px stripes: an antialiased filter (2.2 source px per output px) averages them to grey;
    # nearest-neighbour or plain bilinear sampling would give columns near 0 and 255
    cols = stripes.mean(dim=(0, 1))
    assert (cols - 127.5).abs().max() < 40, cols


def test_celebahq_natural_order_split_and_resize(tmp_path):
    write_celebahq(tmp_path)
    folder = tmp_path / "celebahq"
    (folder / "notes.txt").write_text("not an image: ignored by its suffix")
    ds = load_dataset("celebahq", root=tmp_path)
    got = [round(float(s.float()[i].mean()) * 255 / 10) for s in (ds.train, ds.val, ds.test)
           for i in range(len(s.images))]
    assert got == list(range(20))  # 0.png .. 19.png: 17 train, the 5% val, the last 10% test
    assert torch.equal(ds.test.float()[-1], torch.full((3, 128, 128), 190 / 255))


def test_celebahq_non_square_is_centre_cropped(tmp_path):
    folder = write_celebahq(tmp_path, n=3)
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, 50:250] = 200  # the centre 200x200 square bright, 50 px black on either side
    Image.fromarray(img).save(folder / "2.png")
    test = load_dataset("celebahq", root=tmp_path).test.float()[0]
    assert torch.equal(test, torch.full((3, 128, 128), 200 / 255))


# ------------------------------------------------------------------------------------------
# Read once per machine.
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "celeba"])
def test_second_load_reads_the_cache_not_the_files(name, tmp_path, monkeypatch):
    WRITERS[name](tmp_path)
    first = load_dataset(name, root=tmp_path)
    folders = [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "train-images.npy").is_file()
    DATASETS[name].cache_clear()  # as a new trial process would start

    def boom(*a):
        raise AssertionError("decoded again")

    monkeypatch.setitem(datasets.DECODERS, name, boom)
    second = load_dataset(name, root=tmp_path)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split).images, getattr(second, split).images)
    images, _ = load_arrays(name, root=tmp_path)["train"]
    assert isinstance(images, np.memmap) and images.dtype == np.uint8 and not images.flags.writeable
    second.train.images.zero_()  # every caller gets its own (copy-on-write) map
    assert torch.equal(load_dataset(name, root=tmp_path).train.images, first.train.images)


def test_changed_files_are_decoded_again(tmp_path, monkeypatch):
    write_celebahq(tmp_path, n=5)
    a = load_dataset("celebahq", root=tmp_path)
    DATASETS["celebahq"].cache_clear()
    time.sleep(0.01)
    Image.fromarray(np.full((160, 160, 3), 250, np.uint8)).save(tmp_path / "celebahq" / "5.png")
    b = load_dataset("celebahq", root=tmp_path)
    assert len(b.train.images) == len(a.train.images) + 1  # 6 images: 4 / 1 / 1
    assert len([p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]) == 1  # old one gone


def test_concurrent_loads_decode_once(tmp_path, monkeypatch):
    write_mnist(tmp_path, "MNIST")
    calls, real = [], datasets.DECODERS["mnist"]

    def slow(*a):
        calls.append(1)
        time.sleep(0.3)
        return real(*a)

    monkeypatch.setitem(datasets.DECODERS, "mnist", slow)
    results, errors = [], []

    def trial():
        try:
            results.append(load_arrays("mnist", root=tmp_path))
        except Exception as e:  # reported below
            errors.append(e)

    # the three threads find nothing in the memo or the cache and meet at the file lock
    threads = [threading.Thread(target=trial) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and len(calls) == 1


def test_root_from_environment_and_default(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env", "MNIST")
    monkeypatch.setenv("VAE_DATA_ROOT", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert check_data("mnist") == tmp_path / "env"
    assert load_dataset("mnist").train.images.shape == (22, 1, 28, 28)
    monkeypatch.delenv("VAE_DATA_ROOT")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / "data"
    assert data.data_root(tmp_path / "x") == tmp_path / "x"
    assert check_data("digits", tmp_path / "nowhere") is None  # embedded: no files needed


# ------------------------------------------------------------------------------------------
# Missing files: one line, and no hanging on a network that is not there.
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expect", [
    ("mnist", "MNIST/raw/ with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]"),
    ("fashion", "FashionMNIST/raw/ with train-images-idx3-ubyte[.gz]"),
    ("cifar10", "cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta"),
    ("celeba", "celeba/img_align_celeba/000001.jpg..202599.jpg and "),
    ("celebahq", "celebahq/ with the images"),
])
def test_missing_files_is_one_line_without_network(name, expect, tmp_path):
    start = time.monotonic()
    for call in (lambda: check_data(name, tmp_path), lambda: load_dataset(name, root=tmp_path)):
        with pytest.raises(DataNotFound) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and str(tmp_path / expect.split("/")[0]) in msg and expect in msg
        assert "--data-root" in msg and "VAE_DATA_ROOT" in msg
        if name == "celebahq":
            assert "no official download" in msg
        else:
            assert "no network to download them: cannot reach" in msg
    assert time.monotonic() - start < 5
    assert not (tmp_path / "cache" / "data").exists() or \
        not [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]


def test_missing_names_only_what_is_missing(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataNotFound, match=r"\(missing: data_batch_4\)"):
        check_data("cifar10", tmp_path)
    with pytest.raises(DataNotFound, match=r"\(missing: list_eval_partition.txt\); "):
        (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
        check_data("celeba", tmp_path)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "reachable", lambda url: None)  # the probe says: network

    def refused(url, *a, **k):
        raise urllib.error.URLError("connection refused (test)")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", refused)
    with pytest.raises(DataNotFound) as err:
        check_data("mnist", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "downloading them failed (RuntimeError: Error downloading" in msg
    with pytest.raises(DataNotFound, match="download=False"):
        check_data("fashion", tmp_path, download=False)


# ------------------------------------------------------------------------------------------
# Corrupt or truncated files: a DataError naming the file.
# ------------------------------------------------------------------------------------------

def _assert_names(err, path: Path):
    msg = str(err.value)
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    assert str(path) in msg and "\n" not in msg, msg


def test_truncated_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path, "MNIST")
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-200])
    with pytest.raises(DataError, match="not a readable gzip file") as err:
        load_dataset("mnist", root=tmp_path)
    _assert_names(err, gz)
    assert not [p for p in (tmp_path / "cache" / "data").iterdir() if p.is_dir()]  # nothing half-written


def test_a_search_on_corrupt_files_is_one_line_before_ray(tmp_path, capsys):
    """Issue 30: a truncated file under --data-root started Ray, failed every trial twice
    (~114 lines of tracebacks) and left a run folder with finished.json. The driver decodes
    the data set before Ray: one line naming the file, exit 2, no run folder."""
    import sys as _sys
    from engine.run import run
    _sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from searches.ablation_uae import SEARCH
    write_mnist(tmp_path, "MNIST")
    gz = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    out = tmp_path / "run"
    assert run(SEARCH, ["--smoke", "--dataset", "mnist", "--data-root", str(tmp_path),
                        "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(gz) in err, err
    assert "not a readable gzip file" in err and not out.exists()


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:-100], "truncated or corrupt"),  # a whole IDX file cut short
    (lambda b: b"\x00\x00\x09\x03" + b[4:], "not an IDX file"),  # wrong type byte in the magic
])
def test_corrupt_idx_names_the_file(tmp_path, damage, says):
    write_mnist(tmp_path, "FashionMNIST", gz=False)
    f = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=says) as err:
        load_dataset("fashion", root=tmp_path)
    _assert_names(err, f)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a pickle" + b])
def test_corrupt_cifar_pickle_names_the_file(tmp_path, damage):
    write_cifar(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match="not a readable CIFAR-10 batch") as err:
        load_dataset("cifar10", root=tmp_path)
    _assert_names(err, f)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 3], lambda b: b"garbage" * 50],
                         ids=["truncated", "garbage"])
def test_corrupt_jpeg_names_the_file(tmp_path, damage):
    folder = write_celeba(tmp_path)
    f = folder / "img_align_celeba" / "000004.jpg"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match="not a readable image") as err:
        load_dataset("celeba", root=tmp_path)
    _assert_names(err, f)


def test_listed_but_absent_image_and_bad_partition_file(tmp_path):
    folder = write_celeba(tmp_path)
    (folder / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("celeba", root=tmp_path)
    _assert_names(err, folder / "img_align_celeba" / "000002.jpg")
    (folder / "list_eval_partition.txt").write_text("000001.jpg zero\n")
    with pytest.raises(DataError, match="not a readable partition file") as err:
        load_dataset("celeba", root=tmp_path)
    _assert_names(err, folder / "list_eval_partition.txt")


def test_corrupt_png_names_the_file(tmp_path):
    folder = write_celebahq(tmp_path, n=4)
    f = folder / "3.png"
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(DataError, match="not a readable image") as err:
        load_dataset("celebahq", root=tmp_path)
    _assert_names(err, f)


def test_unofficial_files_are_said_once(tmp_path):
    write_cifar(tmp_path)
    with pytest.warns(UnofficialFilesWarning, match="data_batch_1, .*differ from the official release"):
        load_dataset("cifar10", root=tmp_path)


def test_unofficial_mnist_archives_are_said_too(tmp_path):
    write_mnist(tmp_path, "MNIST")  # the .gz names torchvision's resources list carry
    with pytest.warns(UnofficialFilesWarning, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)
