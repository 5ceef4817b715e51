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

Standardized features. A feature space as choose_features returns it is standardized by its
reference split: every feature f comes out of `extract` (and `reference`) as
z = (f - mu_ref) / sigma_tot, sigma_tot = sqrt(tr Sigma_ref / d), mu_ref and Sigma_ref the
reference split's raw mean and covariance (`Standardization`). The classifier's raw features
(before its ReLU) are uncentred with norm ~300 on mnist5k, so its raw FIDs read in the
hundreds and KID's cubic kernel (x.y / d + 1)^3 on them in 1e7-1e8, scales that mean nothing to
a reader; on z the reference set has mean 0 and E||z||^2 = d, KID reads in its usual 1e-3..1
range and every FID is the raw one divided by sigma_tot^2 exactly (the map is a translation and
one common scale, so the ranks of FIDs against one reference are kept exactly; KID's polynomial
kernel is not translation-invariant, so KID changes more than its scale). The Inception space
keeps the papers' raw FID too (engine/eval/groups/fid.py: eval/fid_<set> raw, eval/fidz_<set>
standardized), as raw FID = FID(z) * sigma_tot^2.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from filelock import FileLock
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from engine.files import cache_dir, write_atomic, write_json_atomic
from engine.eval.metrics.frechet import Stats, frechet_distance, statistics
from models import float_images

INCEPTION_MIN_SIZE = 28  # MNIST's size: the smallest the papers compute Inception FID at
CLASSIFIER_VERSION = 4  # bump when the classifier's architecture or training changes (2: the
# 4x4 grid for images of 16 px and more; the 8x8 digits' network is the same as in 1; 4: batch
# norm, dropout, random shifts, rotations and scalings, CLASSIFIER_STEPS steps kept at the best
# validation loss: test accuracy 0.989 on mnist5k, 0.991 with seed 1, where 2 had 0.952)
CLASSIFIER_DIM = 64
CLASSIFIER_STEPS = 3000  # at most this many Adam steps of 128 images (cosine learning rate)
CLASSIFIER_CHECK_EVERY = 100  # steps between validation checks; the best check's weights kept
CLASSIFIER_PATIENCE = 10  # checks without a better validation loss before training stops
AUGMENT_SHIFT = 2 / 28  # random shifts up to 2 px of 28 (as a fraction of the side),
AUGMENT_DEGREES = 15.0  # rotations up to 15 degrees and
AUGMENT_SCALE = 0.1  # scalings by 1 +- 0.1, drawn per image at every step
CLASSIFIER_DROPOUT = 0.25


class NotComputed(Exception):
    """A metric that cannot be computed here; the message (one line) says why and how to fix."""


@dataclass(frozen=True)
class Standardization:
    """z = (f - mu) / scale with mu the reference split's mean feature and scale its total
    standard deviation sigma_tot = sqrt(tr Sigma / d) (one scale for every direction, so that
    distances keep their proportions: FID(z) = FID(f) / scale^2)."""
    split: str  # the reference split whose statistics these are
    mu: np.ndarray  # (d,) float64
    scale: float  # sigma_tot

    @classmethod
    def of(cls, split: str, stats: Stats) -> "Standardization":
        return cls(split, np.array(stats.mu, dtype=np.float64),
                   float(np.sqrt(np.trace(stats.cov) / len(stats.mu))))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(n, d) raw features -> (n, d) standardized, float64."""
        return (np.asarray(features, dtype=np.float64) - self.mu) / self.scale

    def stats(self, s: Stats) -> Stats:
        """The statistics of the standardized features, from those of the raw ones (exact:
        mean (mu_s - mu) / scale, covariance and its square root divided by scale^2, scale)."""
        return Stats((s.mu - self.mu) / self.scale, s.cov / self.scale ** 2, s.n,
                     None if s.sqrt_cov is None else s.sqrt_cov / self.scale)

    def describe(self) -> str:
        return (f"standardized by the {self.split} split's mean and total s.d. "
                f"(sigma_tot {self.scale:.4g}: FID = raw FID / {self.scale ** 2:.4g})")


def effective_rank(cov: np.ndarray) -> float:
    """(tr Sigma)^2 / ||Sigma||_F^2: 1 where one direction holds all the variance, d where the
    d directions hold equal shares."""
    cov = np.asarray(cov, dtype=np.float64)
    return float(np.trace(cov) ** 2 / np.sum(cov * cov))


@dataclass
class FeatureSpace:
    name: str  # named in every result, e.g. "inception-pool3" or "classifier-digits"
    dim: int
    net: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]  # -> (feat, logits)
    has_inception_logits: bool
    description: str  # for the report, e.g. "own CNN on digits' labels, test accuracy 0.97"
    key: str  # which network exactly (classifier cache key, weights file hash): cache keys
    # set by choose_features: extract() and reference() then give standardized features
    standardization: Standardization | None = None
    # the papers' raw FID is reported beside the standardized one (Inception: published FIDs)
    reports_raw: bool = False

    def raw(self) -> "FeatureSpace":
        """This network without the standardization (raw features, raw FIDs)."""
        return dataclasses.replace(self, standardization=None)

    def standardized(self, by: Standardization) -> "FeatureSpace":
        return dataclasses.replace(self, standardization=by)

    @property
    def cache_key(self) -> str:
        """The network and the standardization: what a cached number in this space depends
        on."""
        z = self.standardization
        return self.key if z is None else f"{self.key}-z{z.split}"

    @property
    def label(self) -> str:
        """"<name>: <description>", the standardization named: the results' "features" note."""
        z = self.standardization
        return f"{self.name}: {self.description}" + ("" if z is None else f"; {z.describe()}")


# At most this many images at a time through a feature network on a CPU. The activations of
# a larger batch (500 through the classifier: 50 MB a map) are each above glibc malloc's
# mmap threshold (at most 32 MB), so every batch maps fresh memory and faults its pages in,
# one by one: measured on MNIST-5k, one thread, a trial's FID group took 11.05 s at 500 and
# 7.6 s at 100, with every feature bit for bit the same (benchmarks/evaluation.py).
CPU_BATCH = 100


@torch.no_grad()
def extract(space: FeatureSpace, images: torch.Tensor, device, batch_size: int = 500,
            raw: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, d) float64 features and (n, classes) logits (None without them) of images in
    [0, 1], computed in batches on `device` (of at most CPU_BATCH on a CPU); standardized
    where the space is (see the module docstring), unless `raw`."""
    if (images.device if device is None else torch.device(device)).type == "cpu":
        batch_size = min(batch_size, CPU_BATCH)
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f, lg = space.net(float_images(images[i:i + batch_size], device).clamp(0, 1))
        feats.append(f.double().cpu())
        if lg is not None:
            logits.append(lg.double().cpu())
    f = torch.cat(feats).numpy()
    if space.standardization is not None and not raw:
        f = space.standardization.apply(f)
    return f, (torch.cat(logits).numpy() if logits else None)


# --- the data set's own classifier ---

class Classifier(nn.Module):
    """A small CNN for any image size >= 8: 3 convolutions with batch norm, average pooling, a
    64-d feature layer (before its ReLU, so no unit is dead in the features) and a linear head,
    dropout before each linear layer.

    The pooling keeps a 4x4 grid of positions for images of 16 px and more, one position for
    smaller ones: on 28x28 digits the global pool left 7x7 maps of strokes position-free
    (test accuracy 0.819 on mnist5k; 0.951 with the grid), while the 8x8 digits end at 2x2."""

    def __init__(self, channels: int, num_classes: int, side: int = 8):
        super().__init__()
        grid = 4 if side >= 16 else 1
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Dropout(CLASSIFIER_DROPOUT),
            nn.Linear(128 * grid * grid, CLASSIFIER_DIM))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(CLASSIFIER_DROPOUT),
                                  nn.Linear(CLASSIFIER_DIM, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, H, W)
        f = self.body(x)  # (B, 64)
        return f, self.head(f)


class _ChannelsLast(nn.Module):
    """`net` fed its input channels-last (B, C, H, W with C innermost in memory)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        return self.net(x.contiguous(memory_format=torch.channels_last))


def for_inference(net: Classifier) -> nn.Module:
    """An eval-mode copy of the classifier for extracting features: each batch norm folded into
    the convolution before it (torch.nn.utils.fusion.fuse_conv_bn_eval: eval-mode batch norm
    is an affine map per channel) and every tensor channels-last. The same features to float
    rounding (1.5e-7 relative, tests/test_evaluation.py), in about half the time on a CPU,
    where the batch norms' and ReLUs' passes over the maps cost as much as the convolutions
    (benchmarks/evaluation.py)."""
    net = copy.deepcopy(net).eval()
    layers, folded = list(net.body), []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d) and folded and isinstance(folded[-1], nn.Conv2d):
            folded[-1] = fuse_conv_bn_eval(folded[-1], layer)
        else:
            folded.append(layer)
    net.body = nn.Sequential(*folded)
    return _ChannelsLast(net).eval()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to AUGMENT_SHIFT of its side, rotated by up to AUGMENT_DEGREES
    and scaled by 1 +- AUGMENT_SCALE (uniform, drawn from `gen`), bilinear, zeros outside.
    (B, C, H, W)"""
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * AUGMENT_DEGREES * torch.pi / 180
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * AUGMENT_SHIFT * 2  # grid units: [-1, 1]
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * AUGMENT_SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # the grid's: 1 / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)


@torch.no_grad()
def _evaluate(net: Classifier, images: torch.Tensor, labels: torch.Tensor
              ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the eval-mode network on a split."""
    losses, right = [], 0
    for i in range(0, len(images), 1000):
        logits = net(float_images(images[i:i + 1000]))[1]
        y = labels[i:i + 1000]
        losses.append(nn.functional.cross_entropy(logits, y, reduction="sum"))
        right += int((logits.argmax(1) == y).sum())
    return float(sum(losses)) / len(images), right / len(images)


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


def train_classifier(data, steps: int | None = None, batch_size: int = 128, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> tuple[Classifier, float]:
    """Train on data.train's labels with a fixed seed on the CPU: Adam (lr 1e-3, cosine to 0
    over `steps`, weight decay 1e-4) on randomly shifted and rotated batches (`augment`); every
    CLASSIFIER_CHECK_EVERY steps the validation loss is measured and the best weights so far
    kept; training stops after CLASSIFIER_PATIENCE checks without a better one (early
    stopping on data.val; on data.test where a data set has no val split). Returns the
    classifier at its best check (eval mode) and its test accuracy; LAST_TRAINING holds what
    the training did (steps run, best step, accuracies).

    Reproducible on one machine; another machine (another BLAS, thread count) may differ in
    the last bits, so a cluster should share one cache folder ($VAE_ABLATIONS_CACHE on the
    shared file system) for its trials' FIDs to share one network."""
    steps = CLASSIFIER_STEPS if steps is None else steps  # read now: the cache key's count
    val = getattr(data, "val", None) or data.test
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # callers run under no_grad
        torch.manual_seed(seed)
        x, y = data.train.images, data.train.labels
        net = Classifier(x.shape[1], data.num_classes, min(x.shape[-2:]))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator().manual_seed(seed)
        order, at = torch.randperm(len(x), generator=gen), 0
        best, best_step, since = (math.inf, 0.0), 0, 0
        best_state = {k: v.clone() for k, v in net.state_dict().items()}
        step = 0
        for step in range(1, steps + 1):
            net.train()
            if at + batch_size > len(x):
                order, at = torch.randperm(len(x), generator=gen), 0
            idx = order[at:at + batch_size]
            at += batch_size
            loss = nn.functional.cross_entropy(net(augment(float_images(x[idx]), gen))[1],
                                               y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            if step % CLASSIFIER_CHECK_EVERY and step != steps:
                continue
            net.eval()
            check = _evaluate(net, val.images, val.labels)
            if log:
                log(f"step {step}: val loss {check[0]:.4f}, val accuracy {check[1]:.4f}")
            if check[0] < best[0]:
                best, best_step, since = check, step, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= CLASSIFIER_PATIENCE:
                    break
    net.load_state_dict(best_state)
    net.eval()
    _, accuracy = _evaluate(net, data.test.images, data.test.labels)
    LAST_TRAINING.clear()
    LAST_TRAINING.update({"steps_run": step, "best_step": best_step, "val_loss": best[0],
                          "val_accuracy": best[1], "test_accuracy": accuracy})
    return net, accuracy


LAST_TRAINING: dict = {}  # what the last train_classifier did (steps run, best step, ...)


def _classifier_key(data) -> tuple[Path, str]:
    """The cache folder of the data set's classifier and its key (version, steps, pixels)."""
    key = (f"classifier-{data.name}-v{CLASSIFIER_VERSION}-s{CLASSIFIER_STEPS}-"
           f"{_fingerprint(data)}")
    return cache_dir() / "features", key


def classifier_cached(data) -> bool:
    """Whether this machine's cache (cache_dir()) holds the data set's classifier."""
    folder, key = _classifier_key(data)
    return (folder / f"{key}.pt").is_file() and (folder / f"{key}.json").is_file()


def classifier_space(data, device) -> FeatureSpace:
    """The data set's classifier, trained once per machine and cached in cache_dir(); its
    meta file records the test accuracy, the training's steps and time, and the effective rank
    of its (raw) features on the test split."""
    if data.train.labels is None:
        raise NotComputed(f"{data.name} has no labels to train a feature classifier on, and "
                          "Inception is not used (see --features)")
    folder, key = _classifier_key(data)
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    with FileLock(str(folder / f"{key}.lock")):  # trials starting together train it once
        if not (weights.is_file() and meta.is_file()):
            LAST_TRAINING.clear()
            start = time.perf_counter()
            net, accuracy = train_classifier(data)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                f = torch.cat([net(float_images(data.test.images[i:i + 1000]))[0]
                               for i in range(0, len(data.test.images), 1000)]).double()
            rank = effective_rank(np.cov(f.numpy(), rowvar=False)) if len(f) > 1 else math.nan
            write_atomic(weights, lambda f: torch.save(net.state_dict(), f))
            write_json_atomic(meta, {"test_accuracy": accuracy, "steps": CLASSIFIER_STEPS,
                                     "dataset": data.name, "train_seconds": seconds,
                                     "threads": torch.get_num_threads(),
                                     "effective_rank_test": rank, **LAST_TRAINING})
    info = json.loads(meta.read_text())
    net = Classifier(data.image_shape[0], data.num_classes, min(data.image_shape[-2:]))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net = for_inference(net.eval()).to(device)
    rank = info.get("effective_rank_test", math.nan)
    return FeatureSpace(f"classifier-{data.name}", CLASSIFIER_DIM, net, False,
                        f"own CNN trained on the labels of {data.name} (test accuracy "
                        f"{info['test_accuracy']:.3f}; its 64-d features' effective rank "
                        f"(tr S)^2/||S||_F^2 {rank:.1f} on the test split); not comparable "
                        "with Inception FIDs", key=key)


def inception_space(device, weights: str | None = None) -> FeatureSpace:
    # pretrained imports lpips and torchvision: only where Inception is asked for
    from engine.eval.metrics.pretrained import inception_weights_path, load_inception
    path = inception_weights_path(weights)
    net = load_inception(path, device=device)
    stat = path.stat()  # the file's identity, cheaper than hashing 100 MB per trial
    return FeatureSpace("inception-pool3", 2048, net, True,
                        "pytorch-fid's Inception-v3 pool3 (eval/fid_<set>: the papers' raw "
                        "FID; eval/fidz_<set>, eval/kidz_<set>: on standardized features)",
                        key=f"inception-{stat.st_size}-{int(stat.st_mtime)}", reports_raw=True)


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


def choose_features(data, which: str, device, inception_weights: str | None = None,
                    reference_split: str | None = "test") -> FeatureSpace:
    """"inception", "classifier" or "auto" (see the module docstring); NotComputed if the
    asked-for space cannot be had, with the reason. The space is standardized by
    `reference_split`'s statistics (computed once and cached, see `reference`), so that
    `extract` and `reference` give standardized features to every caller; None: raw features.
    TooFewSamples where that split has no more images than the features have dimensions."""
    space = _choose_network(data, which, device, inception_weights)
    if reference_split is None:
        return space
    raw = reference(data, reference_split, space, device)
    return space.standardized(Standardization.of(reference_split, raw.stats))


def _choose_network(data, which: str, device, inception_weights: str | None) -> FeatureSpace:
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
    """Statistics of data.<split> in `space` (standardized where the space is), computed once
    per (data set, split, network) and cached raw in cache_dir()/reference; `recompute`
    ignores the cache. The standardized statistics are the raw ones mapped exactly
    (`Standardization.stats`), so one cached file serves both."""
    images = getattr(data, split).images
    h = hashlib.sha256()
    _hash_pixels(h, images)
    digest = h.hexdigest()[:16]
    folder = cache_dir() / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data.name}-{split}-{space.key}-{digest}.npz"
    if path.is_file() and not recompute:
        z = np.load(path)
        ref = Reference(Stats(z["mu"], z["cov"], int(z["n"]), z["sqrt_cov"]), z["features"])
    else:
        feats, _ = extract(space, images, device, raw=True)
        stats = statistics(feats).with_sqrt()

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: given a path, np.savez appends ".npz"
                np.savez(f, mu=stats.mu, cov=stats.cov, n=stats.n, sqrt_cov=stats.sqrt_cov,
                         features=feats.astype(np.float32))
        write_atomic(path, save)
        ref = Reference(stats, feats.astype(np.float32))
    z = space.standardization
    if z is None:
        return ref
    return Reference(z.stats(ref.stats), z.apply(ref.features).astype(np.float32))


# --- the floor: what real data scores at the evaluation's own sizes ---

FLOOR_VERSION = 1  # bump when the floor's images or its computation change
FLOOR_SPLITS = ("val", "test", "train")  # where a floor's real images come from, in this
# order (the reference split left out): first the splits no model trains on


def floor_images(data, reference_split: str, n: int, seed: int = 0
                 ) -> tuple[torch.Tensor, str]:
    """n real images disjoint from the reference split (or all there are, if fewer), taken
    from FLOOR_SPLITS in order, a seeded random subset of the last split used; and where they
    came from, e.g. "750 val" or "750 val + 3,500 train"."""
    parts, taken = [], []
    for split in FLOOR_SPLITS:
        if n <= 0:
            break
        if split == reference_split or getattr(data, split, None) is None:
            continue
        images = getattr(data, split).images
        k = min(n, len(images))
        if k < len(images):
            gen = torch.Generator().manual_seed(seed)
            images = images[torch.randperm(len(images), generator=gen)[:k].sort().values]
        taken.append(images)
        parts.append(f"{k:,} {split}")
        n -= k
    if not taken:
        raise NotComputed(f"{data.name} has no real images outside its {reference_split} split")
    return torch.cat(taken), " + ".join(parts)


def real_floor(data, reference_split: str, space: FeatureSpace, n: int, device,
               kid_subsets: int = 100, kid_subset_size: int = 1000, batch_size: int = 500
               ) -> dict:
    """What real data scores against the reference at n images: FID and KID (mean, std) of
    `floor_images(data, reference_split, n)` against data.<reference_split>, in `space` (keys
    fid, kid, kid_std; for a standardized space those are the standardized values, and
    fid_raw, kid_raw, kid_raw_std the raw ones), with "n" (the images used)
    and "images" (where from). Computed once per (data set, reference split, feature space,
    n, KID settings) and cached in cache_dir()/floor, so that a machine's trials share it."""
    from engine.eval.metrics.sample_quality import kid
    images, where = floor_images(data, reference_split, n)
    h = hashlib.sha256()
    for part in (images, getattr(data, reference_split).images):
        _hash_pixels(h, part)
    digest = h.hexdigest()[:16]
    folder = cache_dir() / "floor"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{data.name}-{reference_split}-{space.cache_key}-n{n}-"
                     f"k{kid_subsets}x{kid_subset_size}-v{FLOOR_VERSION}-{digest}.json")
    with FileLock(str(path.with_suffix(".lock"))):  # trials ending together compute it once
        if path.is_file():  # NaN (a std that cannot be had) is null in JSON
            return {k: math.nan if v is None else v
                    for k, v in json.loads(path.read_text()).items()}
        raw = space.raw()
        ref = reference(data, reference_split, raw, device)
        feats, _ = extract(raw, images, device, batch_size)
        out: dict = {"n": len(images), "images": where,
                     "reference": f"{len(ref.features):,} {reference_split}"}
        z = space.standardization
        if z is None:
            out["fid"] = frechet_distance(ref.stats, statistics(feats))
            out["kid"], out["kid_std"] = kid(ref.features, feats, kid_subsets, kid_subset_size,
                                             device=device)
        else:
            out["fid"] = frechet_distance(z.stats(ref.stats), statistics(z.apply(feats)))
            out["kid"], out["kid_std"] = kid(z.apply(ref.features), z.apply(feats), kid_subsets,
                                             kid_subset_size, device=device)
            # the raw ones too, whether or not this space reports them (one cache file)
            out["fid_raw"] = out["fid"] * z.scale ** 2
            out["kid_raw"], out["kid_raw_std"] = kid(ref.features, feats, kid_subsets,
                                                     kid_subset_size, device=device)
        write_json_atomic(path, {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in out.items()})
        return out
