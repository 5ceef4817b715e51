"""The feature spaces that FID, precision/recall and IS are computed in, and the cached
reference statistics of a data set in each.

Two feature spaces, always named in the results:
- "inception": pytorch-fid's Inception-v3 pool3 features (2,048-d) and its logits (IS); the
  standard FID. Needs pytorch-fid's weights file (engine/eval/metrics/pretrained.py).
- "classifier-<data set>": the penultimate layer (64-d) of a small CNN trained once,
  deterministically, on the data set's own labels (as is common for MNIST-like data) and
  cached on disk. Its numbers are comparable with each other, not with Inception FIDs.

`choose_features("auto", ...)` takes Inception where the images suit it (at least 28 px, the
size the papers compute Inception FIDs at) and its weights are present, else the data set's
classifier, and says which in `FeatureSpace.name`; asking for one explicitly never falls back
to the other.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from engine.files import write_atomic, write_json_atomic
from engine.eval.metrics.frechet import Stats, statistics
from models import float_images

CACHE_ENV = "VAE_ABLATIONS_CACHE"
INCEPTION_MIN_SIZE = 28  # MNIST's size: the smallest the papers compute Inception FID at
CLASSIFIER_VERSION = 2  # bump when the classifier's architecture or training changes (2: the
# 4x4 grid for images of 16 px and more; the 8x8 digits' network is the same as in 1)
CLASSIFIER_DIM = 64
CLASSIFIER_STEPS = 1000  # Adam steps of 128 images


class NotComputed(Exception):
    """A metric that cannot be computed here; the message (one line) says why and how to fix."""


def cache_dir() -> Path:
    """Where per-machine caches live: $VAE_ABLATIONS_CACHE, else ~/.cache/vae-ablations."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vae-ablations")


@dataclass
class FeatureSpace:
    name: str  # named in every result, e.g. "inception-pool3" or "classifier-digits"
    dim: int
    net: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]  # -> (feat, logits)
    has_inception_logits: bool
    description: str  # for the report, e.g. "own CNN on digits' labels, test accuracy 0.97"
    key: str  # which network exactly (classifier cache key, weights file hash): cache keys


@torch.no_grad()
def extract(space: FeatureSpace, images: torch.Tensor, device, batch_size: int = 500
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, d) float64 features and (n, classes) logits (None without them) of images in
    [0, 1], computed in batches on `device`."""
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, lg = space.net(float_images(images[i:i + batch_size], device).clamp(0, 1))
        feats.append(f.double().cpu())
        if lg is not None:
            logits.append(lg.double().cpu())
    return (torch.cat(feats).numpy(),
            torch.cat(logits).numpy() if logits else None)


# --- the data set's own classifier ---

class Classifier(nn.Module):
    """A small CNN for any image size >= 8: 3 convolutions, average pooling, a 64-d feature
    layer (before its ReLU, so no unit is dead in the features) and a linear head.

    The pooling keeps a 4x4 grid of positions for images of 16 px and more, one position for
    smaller ones: on 28x28 digits the global pool left 7x7 maps of strokes position-free
    (test accuracy 0.819 on mnist5k; 0.951 with the grid), while the 8x8 digits end at 2x2."""

    def __init__(self, channels: int, num_classes: int, side: int = 8):
        super().__init__()
        grid = 4 if side >= 16 else 1
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(128 * grid * grid, CLASSIFIER_DIM))
        self.head = nn.Linear(CLASSIFIER_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, H, W)
        f = self.body(x)  # (B, 64)
        return f, self.head(torch.relu(f))


def _hash_pixels(h, images: torch.Tensor, chunk: int = 4096) -> None:
    """Feed `h` the float32 bytes of `images` as models.float_images reads them, `chunk` images
    at a time: the same digest for a split held as uint8 or as float32 (and for the float32
    splits of before), and no whole copy of a large split."""
    for i in range(0, len(images), chunk):
        h.update(float_images(images[i:i + chunk]).cpu().contiguous().numpy().tobytes())


def _fingerprint(data) -> str:
    h = hashlib.sha256()
    for split in (data.train, data.test):
        _hash_pixels(h, split.images)
        h.update(split.labels.numpy().tobytes())
    return h.hexdigest()[:16]


def train_classifier(data, steps: int | None = None, batch_size: int = 128, seed: int = 0
                     ) -> tuple[Classifier, float]:
    """Train on data.train's labels with a fixed seed on the CPU; returns the classifier (eval
    mode) and its test accuracy. Reproducible on one machine; another machine (another BLAS,
    thread count) may differ in the last bits, so a cluster should share one cache folder
    ($VAE_ABLATIONS_CACHE on the shared file system) for its trials' FIDs to share one
    network."""
    steps = CLASSIFIER_STEPS if steps is None else steps  # read now: the cache key's count
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # callers run under no_grad
        torch.manual_seed(seed)
        x, y = float_images(data.train.images), data.train.labels
        net = Classifier(x.shape[1], data.num_classes, min(x.shape[-2:]))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        order, at = torch.randperm(len(x), generator=gen), 0
        for _ in range(steps):
            if at + batch_size > len(x):
                order, at = torch.randperm(len(x), generator=gen), 0
            idx = order[at:at + batch_size]
            at += batch_size
            loss = nn.functional.cross_entropy(net(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(float_images(data.test.images[i:i + 1000]))[1].argmax(1)
                          for i in range(0, len(data.test.images), 1000)])
    return net, float((pred == data.test.labels).float().mean())


def classifier_space(data, device) -> FeatureSpace:
    """The data set's classifier, trained once per machine and cached in cache_dir()."""
    if data.train.labels is None:
        raise NotComputed(f"{data.name} has no labels to train a feature classifier on, and "
                          "Inception is not used (see --features)")
    key = (f"classifier-{data.name}-v{CLASSIFIER_VERSION}-s{CLASSIFIER_STEPS}-"
           f"{_fingerprint(data)}")
    folder = cache_dir() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    with FileLock(str(folder / f"{key}.lock")):  # trials starting together train it once
        if not (weights.is_file() and meta.is_file()):
            net, accuracy = train_classifier(data)
            write_atomic(weights, lambda f: torch.save(net.state_dict(), f))
            write_json_atomic(meta, {"test_accuracy": accuracy, "steps": CLASSIFIER_STEPS,
                                     "dataset": data.name})
    info = json.loads(meta.read_text())
    net = Classifier(data.image_shape[0], data.num_classes, min(data.image_shape[-2:]))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.to(device).eval()
    return FeatureSpace(f"classifier-{data.name}", CLASSIFIER_DIM, net, False,
                        f"own CNN trained on the labels of {data.name} (test accuracy "
                        f"{info['test_accuracy']:.3f}), 64-d features; not comparable with "
                        "Inception FIDs", key=key)


def inception_space(device, weights: str | None = None) -> FeatureSpace:
    # pretrained imports lpips and torchvision: only where Inception is asked for
    from engine.eval.metrics.pretrained import inception_weights_path, load_inception
    path = inception_weights_path(weights)
    net = load_inception(path, device=device)
    stat = path.stat()  # the file's identity, cheaper than hashing 100 MB per trial
    return FeatureSpace("inception-pool3", 2048, net, True,
                        "pytorch-fid's Inception-v3 pool3 (the standard FID)",
                        key=f"inception-{stat.st_size}-{int(stat.st_mtime)}")


def resolve_auto(image_shape: tuple[int, ...], n_reference: int | None,
                 inception_weights: str | None = None) -> str:
    """What "auto" means for this data set on this machine: "inception" where the images
    (C, H, W) suit it, its weights are here and the reference split has more than 2,048
    images (a full-rank covariance; None: not known, as for the real data sets, whose test
    splits all have more), else "classifier". A search resolves it once, on the driver, so
    that no trial on another node silently computes its FIDs in another space."""
    from engine.eval.metrics.pretrained import WeightsMissing, inception_weights_path
    suits = (min(image_shape[1:]) >= INCEPTION_MIN_SIZE
             and (n_reference is None or n_reference > 2048))
    if not suits:
        return "classifier"
    try:
        inception_weights_path(inception_weights)
    except WeightsMissing:
        return "classifier"
    return "inception"


def choose_features(data, which: str, device, inception_weights: str | None = None
                    ) -> FeatureSpace:
    """"inception", "classifier" or "auto" (see the module docstring); NotComputed if the
    asked-for space cannot be had, with the reason."""
    from engine.eval.metrics.pretrained import WeightsMissing
    if which == "classifier":
        return classifier_space(data, device)
    suits = min(data.image_shape[1:]) >= INCEPTION_MIN_SIZE
    try:
        if which == "inception" or suits:
            return inception_space(device, inception_weights)
    except WeightsMissing as e:
        if which == "inception":
            raise NotComputed(str(e)) from None
        try:
            return classifier_space(data, device)
        except NotComputed as e2:
            raise NotComputed(f"{e}; and {e2}") from None
    return classifier_space(data, device)


# --- reference statistics ---

@dataclass
class Reference:
    stats: Stats  # with its cached square root
    features: np.ndarray  # (n, d) float32, for precision / recall


def reference(data, split: str, space: FeatureSpace, device, recompute: bool = False
              ) -> Reference:
    """Statistics of data.<split> in `space`, computed once per (data set, split, feature
    space) and cached in cache_dir()/reference; `recompute` ignores the cache."""
    images = getattr(data, split).images
    h = hashlib.sha256()
    _hash_pixels(h, images)
    digest = h.hexdigest()[:16]
    folder = cache_dir() / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data.name}-{split}-{space.key}-{digest}.npz"
    if path.is_file() and not recompute:
        z = np.load(path)
        return Reference(Stats(z["mu"], z["cov"], int(z["n"]), z["sqrt_cov"]), z["features"])
    feats, _ = extract(space, images, device)
    stats = statistics(feats).with_sqrt()
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, np.savez appends ".npz"
            np.savez(f, mu=stats.mu, cov=stats.cov, n=stats.n, sqrt_cov=stats.sqrt_cov,
                     features=feats.astype(np.float32))
    write_atomic(path, save)
    return Reference(stats, feats.astype(np.float32))
