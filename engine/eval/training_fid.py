"""A cheap FID logged during training, so that the report can tell whether the rows' order by
FID, not only by the validation error, had settled when training ended (the report's Kendall
τ of the row order at 50% and 75% of the epochs against the end, engine/report).

`val/fid_rec`: the FID of the reconstructions of the first `TRAINING_FID_IMAGES` validation
images against the whole validation split, in the evaluation's feature space standardized by
the validation split (engine/eval/metrics/features.py), every `train_fid_every` epochs and at
the last. It never looks at the test split, which the final evaluation keeps; and its numbers
are on another reference and size than the table's eval/fid_rec, so only its course over the
epochs, not its level, compares with it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from engine.eval.metrics import evaluating
from engine.eval.metrics import sample_quality as sq
from engine.eval.metrics.features import NotComputed, choose_features, extract, reference
from engine.eval.metrics.frechet import TooFewSamples, frechet_distance, statistics

TRAINING_FID_IMAGES = 2000
METRIC = "val/fid_rec"


class TrainingFid:
    """FID of reconstructions of validation images, ready to call with a model; `reason` says
    why not where it cannot be computed (no feature network, too few validation images)."""

    @classmethod
    def of(cls, data, settings, device) -> "TrainingFid | None":
        """The trial's, where its evaluation has the "fid" group and train_fid_every > 0."""
        if "fid" not in settings.metrics or settings.train_fid_every <= 0:
            return None
        return cls(data, settings, device)

    def __init__(self, data, settings, device, images: int = TRAINING_FID_IMAGES):
        self.device, self.batch_size = device, settings.batch_size
        self.images = data.val.images[:images]
        self.reason: str | None = None
        try:
            self.space = choose_features(data, settings.features, device,
                                         settings.inception_weights, reference_split="val")
            self.stats = reference(data, "val", self.space, device).stats
            if len(self.images) <= self.space.dim:
                raise TooFewSamples(f"{len(self.images)} validation images for "
                                    f"{self.space.dim}-dimensional features")
        except (NotComputed, TooFewSamples) as e:
            self.reason = f"{METRIC} not logged during training: {e}"

    @torch.no_grad()
    def __call__(self, model) -> float:
        """The FID, or NaN where it cannot be computed for this model now (non-finite
        reconstructions of a model on its way to diverging): a training-time number must
        never cost the trial its epoch."""
        with evaluating(model):  # BatchNorm on its running statistics; the mode restored
            # (n, C, H, W) in [0, 1], left on the device the features are computed on
            recs = torch.cat([r.float() for r in sq.reconstructions(
                model, self.images, self.device, self.batch_size)])
        if not torch.isfinite(recs).all():
            return math.nan
        feats, _ = extract(self.space, recs, self.device, self.batch_size)
        try:
            return frechet_distance(self.stats, statistics(feats))
        except (np.linalg.LinAlgError, ValueError):
            return math.nan


def due(epoch: int, every: int, final: bool) -> bool:
    """Every `every` epochs (0: never) and at the last."""
    return every > 0 and (final or epoch % every == 0)
