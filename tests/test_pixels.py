"""Images held as uint8, once (issue 15): a real data set's splits are the machine's cached
.npy files mapped into the trial, not copies of them, and every path that reads images (the
training epoch, validation, every evaluation group, the feature caches' digests) gives
exactly what it gave for the same images held as float32."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from engine.data import cache
from engine.data import Dataset, Split, load_dataset
from engine.eval.evaluate import GROUPS, EvalSettings, evaluate, reconstruction_mse
from engine.eval.metrics import features
from engine.eval.metrics.features import _hash_pixels
from engine.run.trial import train_epoch

from test_real_data import write_mnist

pytestmark = pytest.mark.filterwarnings("ignore::engine.data.real.UnofficialFilesWarning")


def as_float32(ds: Dataset) -> Dataset:
    """The same images held as float32 in [0, 1]: how every data set was held before."""
    return Dataset(ds.name, *(Split(s.float(), s.labels)
                              for s in (ds.train, ds.val, ds.test)))


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory mapping holds the tensor's first byte (None: private memory)."""
    address = tensor.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, stop = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < stop:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ABLATIONS_CACHE", str(tmp_path / "cache"))
    cache._OPENED.clear()
    arrays = write_mnist(tmp_path, "MNIST", n_train=40, n_test=10)
    yield tmp_path, arrays
    cache._OPENED.clear()


def test_a_real_sets_splits_are_the_cache_files_mapped_not_copies(mnist):
    root, arrays = mnist
    ds = load_dataset("mnist", root=root)
    cache = next(p for p in (root / "cache" / "data").iterdir() if p.is_dir())
    for split in ("train", "val", "test"):
        images = getattr(ds, split).images
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        # the page cache's pages of the cache file itself: one copy per machine, none per trial
        assert mapped_file(images) == str(cache / f"{split}-images.npy"), split
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    # a trial's in-place edit reaches neither another trial's data nor the file
    other = load_dataset("mnist", root=root)
    other.train.images.zero_()
    assert torch.equal(ds.train.images[:, 0],
                       torch.from_numpy(arrays["train-images-idx3-ubyte"][:len(ds.train.images)]))
    assert np.load(cache / "train-images.npy").any()
    assert torch.equal(load_dataset("mnist", root=root).train.images, ds.train.images)


def test_float_images_is_k_over_255_on_the_device_and_takes_floats_as_they_are():
    codes = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    want = torch.from_numpy(np.arange(256).reshape(1, 1, 16, 16) / 255.0)  # float64 k / 255
    got = models.float_images(codes)
    assert got.dtype == torch.float32 and torch.equal(got, want.float())
    assert models.float_images(codes, dtype=torch.float64).dtype == torch.float64
    floats = torch.rand(2, 1, 4, 4)
    assert models.float_images(floats) is floats  # no copy of a batch already as asked
    assert torch.equal(models.float_images(floats, dtype=torch.float64), floats.double())


def test_a_feature_cache_digest_is_the_same_for_uint8_and_float32_images():
    u8 = load_dataset("mnist5k")
    h = hashlib.sha256()
    _hash_pixels(h, u8.test.images, chunk=100)  # in chunks: the same stream of bytes
    # the digest of the float32 tensors of before: their feature caches stay valid
    assert h.hexdigest() == hashlib.sha256(u8.test.float().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("preset", ["UAE", "Diag-I", "VAE-learned-γ"])
def test_a_training_epoch_on_uint8_is_the_epoch_on_float32(preset):
    u8 = load_dataset("mnist5k")
    f32 = as_float32(u8)
    assert u8.train.images.dtype == torch.uint8 and f32.train.images.dtype == torch.float32
    results = []
    for ds in (u8, f32):
        torch.manual_seed(0)
        model = models.build(preset, ds.image_shape, arch="mlp", hidden=32, latent_dim=4)
        opt = model.make_optimizer()
        terms = train_epoch(model, opt, ds.train.images[:640], 64, torch.Generator().manual_seed(1))
        results.append((terms, model.state_dict(), reconstruction_mse(model, ds.val.images)))
    (terms_a, state_a, val_a), (terms_b, state_b, val_b) = results
    assert terms_a == terms_b and val_a == val_b
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k


@pytest.mark.parametrize("preset", ["UAE", "Diag-I"])
def test_every_evaluation_group_on_uint8_is_the_one_on_float32(preset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS backbone: a note in both
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    # a classifier of 20 steps in a cache of its own (1,000 take minutes): the FIDs only need
    # to be the same network's for both
    monkeypatch.setenv("VAE_ABLATIONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "CLASSIFIER_STEPS", 20)
    u8 = load_dataset("mnist5k")
    f32 = as_float32(u8)
    torch.manual_seed(0)
    model = models.build(preset, u8.image_shape, arch="mlp", hidden=32, latent_dim=4)
    settings = EvalSettings(metrics=GROUPS, fid_samples=200, densities=("prior", "gmm10"),
                            nll_images=64, iwae_k=4, diagnostic_images=64, grad_var_draws=2,
                            variance_draws=2, ppl_samples=32)
    a = evaluate(model, u8, torch.device("cpu"), settings, seed=0)
    b = evaluate(model, f32, torch.device("cpu"), settings, seed=0)
    assert a["notes"] == b["notes"]
    values = {k: v for k, v in a.items() if k != "notes" and not k.startswith("time/")}
    assert values.keys() == {k for k in b if k != "notes" and not k.startswith("time/")}
    for group in ("test/mse", "eval/fid_rec", "eval/fid_sample_gmm10", "eval/latent_var",
                  "eval/mse_train"):
        assert group in values, group  # each group computed something
    if preset == "Diag-I":
        assert "eval/nll" in values and "eval/sigma_x2" in values  # the train-set MLE read
    for k, v in values.items():
        assert v == b[k] or (math.isnan(v) and math.isnan(b[k])), (k, v, b[k])


def test_a_trial_holds_its_data_on_its_gpu_only_where_they_fit_its_share():
    from engine.run.trial import DEVICE_DATA_SHARE, data_device
    celeba = (162_770 + 19_867) * 3 * 64 * 64  # train + val, uint8: 2.24 GB
    gpu, a10g = torch.device("cuda", 0), 24 * 10 ** 9
    assert data_device(celeba, gpu, 1.0, a10g) == gpu  # a whole GPU: 6 GB for data
    assert data_device(celeba, gpu, 0.0, a10g) == gpu  # no share asked: the whole GPU
    assert data_device(celeba, gpu, 1 / 8, a10g) == torch.device("cpu")  # 8 trials: 3 GB each
    mnist = 60_000 * 784
    assert data_device(mnist, gpu, 1 / 8, a10g) == gpu
    assert data_device(int(DEVICE_DATA_SHARE * a10g / 4) + 1, gpu, 0.25, a10g).type == "cpu"
    assert data_device(celeba, torch.device("cpu"), 0.0) == torch.device("cpu")
