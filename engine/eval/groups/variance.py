"""The "variance" group (Takida Table 3): the model's decoder variance Sigma_x estimated for
each test image and pixel, averaged (eval/sigma_x2) and averaged over each cell of
engine/data/__init__.py's partition (eval/sigma_x2_<cell>: SU, SL, BU, BL, or U, L without
labels)."""
from __future__ import annotations

from engine.data import cell_masks
from engine.eval.context import Context
from engine.eval.metrics.likelihood import NotComputable, decoder_variance_map


def variance(ctx: Context) -> dict:
    test = ctx.data.test
    try:
        var = decoder_variance_map(ctx.model, test.images, ctx.data.train.images,
                                   ctx.settings.variance_draws, ctx.seed,
                                   ctx.settings.batch_size)  # (N, *X)
    except NotComputable as e:
        return {"eval/sigma_x2": str(e)}
    out = {"eval/sigma_x2": float(var.mean())}
    for cell, mask in cell_masks(test, ctx.data.num_classes).items():
        mask = mask.expand_as(var)
        if mask.any():
            out[f"eval/sigma_x2_{cell}"] = float(var[mask].mean())
    return out
