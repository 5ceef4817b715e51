"""What an evaluation computes and with how many samples: `EvalSettings`, the flags --eval,
--fid-samples, --features, --inception-weights and --eval-set FIELD=VALUE as one frozen,
validated value, saved with every run (search.json, each trial's params).

Sample counts are settings; the papers use 10,000 for FID.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import models
from engine.eval.groups import GROUPS, parse_groups

DENSITY_SETS = models.DENSITY_SETS  # name -> models.DensitySet: what --eval fid samples


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and with how many samples (flags: --eval, --fid-samples, --features,
    --inception-weights, --eval-set FIELD=VALUE)."""
    metrics: tuple[str, ...] = GROUPS
    features: str = "auto"  # "auto" | "inception" | "classifier" (engine/eval/metrics/features.py)
    inception_weights: str | None = None  # pytorch-fid's weights file, else the hub cache
    reference_split: str = "test"  # FID's real images (and the reconstructed / interpolated)
    fid_samples: int = 10_000  # generated images per FID (the papers: 10,000)
    densities: tuple[str, ...] = tuple(DENSITY_SETS)  # every one models declares
    pr_k: int = 3  # Kynkäänniemi et al.'s k
    kid_subsets: int = 100  # KID's subsets and their size (torch-fidelity's defaults)
    kid_subset_size: int = 1000
    lpips_net: str = "alex"
    ppl_samples: int = 10_000
    ppl_epsilon: float = 1e-4  # MVU-AE / StyleGAN
    iwae_k: int = 500  # Takida Table 7
    nll_images: int = 1_000  # test images for the NLL bound (0: all)
    diagnostic_images: int = 1_000  # training images for Takida Table 1 (as App. D: train set)
    grad_var_draws: int = 32
    variance_draws: int = 8  # z ~ q(z|x) per test image for the "variance" group
    batch_size: int = 500
    # with the "fid" group: val/fid_rec every this many epochs during training and at the
    # last (engine/eval/training_fid.py); 0: never
    train_fid_every: int = 5

    def validate(self) -> "EvalSettings":
        """Raise ValueError with one line naming the bad setting."""
        bad = [m for m in self.metrics if m not in GROUPS]
        if bad:
            raise ValueError(f"--eval: unknown metric group {bad[0]!r}; groups: "
                             f"{', '.join(GROUPS)} (or all / none)")
        if self.features not in ("auto", "inception", "classifier"):
            raise ValueError(f"--features {self.features!r}: use auto, inception or classifier")
        if self.reference_split not in ("train", "val", "test"):
            raise ValueError(f"reference_split {self.reference_split!r}: use train, val or test")
        unknown = [d for d in self.densities if d not in DENSITY_SETS]
        if unknown:
            raise ValueError(f"densities: unknown {unknown[0]!r}; known: "
                             f"{', '.join(DENSITY_SETS)}")
        for name in ("fid_samples", "pr_k", "ppl_samples", "iwae_k", "grad_var_draws",
                     "variance_draws", "batch_size", "kid_subsets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 1")
        for name in ("nll_images", "diagnostic_images", "train_fid_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 0 (0: all)")
        for f in dataclasses.fields(self):  # every float setting, so none is forgotten
            value = getattr(self, f.name)
            # inf passes `> 0` below; NaN fails it with a message that does not say why
            if f.type in (float, "float") and not math.isfinite(value):
                raise ValueError(f"{f.name} {value} must be finite (not inf or nan), e.g. "
                                 f"{f.name}={f.default}")
        if self.kid_subset_size < 2:
            raise ValueError(f"kid_subset_size {self.kid_subset_size} must be >= 2")
        if not self.ppl_epsilon > 0:
            raise ValueError(f"ppl_epsilon {self.ppl_epsilon} must be > 0")
        if self.lpips_net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"lpips_net {self.lpips_net!r}: use alex, vgg or squeeze")
        return self

    def replace(self, **changes) -> "EvalSettings":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvalSettings":
        """Settings from a trial's params or search.json. None (a run from before the suite)
        is the reconstruction group only, as such runs were evaluated; fields this version
        does not know are dropped (a run written by another version)."""
        if d is None:
            return cls(metrics=("reconstruction",))
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("metrics"), str):
            d["metrics"] = parse_groups(d["metrics"])
        if isinstance(d.get("densities"), str):
            d["densities"] = tuple(v.strip() for v in d["densities"].split(",") if v.strip())
        for k in ("metrics", "densities"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d).validate()
