"""The "fid" group (UAE Table 2; Takida Tables 4-6; Dai & Wipf Table 1; MVU-AE Table 2): FID,
KID, precision / recall and the Inception Score of each image set (reconstructions, samples
through each density, interpolations) against the reference split, each beside its floor, the
score of real images at the set's size (engine/eval/groups/__init__.py names the metrics)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

import models
from engine.eval.context import Context, guarded
from engine.eval.metrics import sample_quality as sq
from engine.eval.metrics.features import (NotComputed, choose_features, extract, real_floor,
                                          reference)
from engine.eval.metrics.frechet import TooFewSamples, frechet_distance, statistics
from engine.eval.metrics.sample_quality import (NO_SUBSET_SPREAD, inception_score, kid,
                                                precision_recall, subsets_differ)
from engine.eval.settings import DENSITY_SETS

FID_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "floor_fid", "floor_kid")


def _density_latents(ctx: Context) -> torch.Tensor:
    if "train_latents" not in ctx.cache:
        ctx.cache["train_latents"] = models.draw_latents(ctx.model, ctx.data.train.images,
                                                         ctx.seed)
    return ctx.cache["train_latents"]


def _image_sets(ctx: Context) -> dict[str, Callable]:
    """name -> a function giving an iterator of image batches (evaluated lazily, one at a
    time, so a failing density costs only its own metrics)."""
    m, s, dev = ctx.model, ctx.settings, ctx.device
    ref = getattr(ctx.data, s.reference_split).images
    sets: dict[str, Callable] = {"rec": lambda: sq.reconstructions(m, ref, dev, s.batch_size)}

    def density_set(name: str, declared: models.DensitySet):
        def make():
            density = declared.fit(_density_latents(ctx), m.cfg, ctx.seed,
                                   models.redraw_latents(m, ctx.data.train.images, ctx.seed))
            z = density.sample(s.fid_samples, seed=ctx.seed).float()
            ctx.drawn[name] = z  # this density's own name (not the loop's last, read late)
            return sq.decoded(m, z, dev, s.batch_size)
        return make

    for name in s.densities:
        sets[f"sample_{name}"] = density_set(name, DENSITY_SETS[name])
    for ratio in ("mid", "rand"):
        sets[f"interp_{ratio}"] = (lambda r=ratio: sq.decoded(
            m, sq.interpolation_latents(m, ref, s.fid_samples, r, ctx.seed, dev, s.batch_size),
            dev, s.batch_size))
    return sets


@torch.no_grad()
def fid(ctx: Context) -> dict:
    s = ctx.settings
    sets = _image_sets(ctx)
    try:
        space = choose_features(ctx.data, s.features, ctx.device, s.inception_weights,
                                reference_split=s.reference_split)
        ref = reference(ctx.data, s.reference_split, space, ctx.device)
        raw_ref = (reference(ctx.data, s.reference_split, space.raw(), ctx.device)
                   if space.reports_raw else None)
    except (NotComputed, TooFewSamples) as e:
        keys = FID_KEYS + (("fidz", "kidz") if s.features == "inception" else ())
        return {f"eval/{k}_{n}": str(e) for n in sets for k in keys}
    ctx.notes["features"] = space.label
    z = space.standardization
    out: dict = {}
    floors: dict[int, str] = {}  # n -> where the floor's images came from
    for name, make in sets.items():
        try:  # the images and their features (a GMM that cannot be fitted fails here)
            raw, logits = _features_of(space, make(), ctx.device, s.batch_size)
        except Exception as e:  # noqa: BLE001
            out.update({f"eval/{k}_{name}": f"failed: {type(e).__name__}: {e}"
                        for k in FID_KEYS})
            continue
        feats = z.apply(raw)
        # standardized FID and KID; in a space that reports raw ones (Inception), the papers'
        # raw FID and KID under the usual names, the standardized ones as fidz / kidz
        fid_name, kid_name = ("fidz", "kidz") if space.reports_raw else ("fid", "kid")
        guarded(out, [f"eval/{fid_name}_{name}"], lambda: {
            f"eval/{fid_name}_{name}": frechet_distance(ref.stats, statistics(feats))})
        if space.reports_raw and isinstance(out.get(f"eval/fidz_{name}"), float):
            out[f"eval/fid_{name}"] = out[f"eval/fidz_{name}"] * z.scale ** 2  # exact
        kids = [(kid_name, ref.features, feats)]
        if space.reports_raw:
            kids.append(("kid", raw_ref.features, raw))
        for k, real, fake in kids:
            guarded(out, [f"eval/{k}_{name}", f"eval/{k}_std_{name}"], lambda: dict(zip(
                (f"eval/{k}_{name}", f"eval/{k}_std_{name}"),
                kid(real, fake, s.kid_subsets, s.kid_subset_size, seed=ctx.seed,
                    device=ctx.device))))
            if not subsets_differ(len(real), len(fake), s.kid_subset_size):
                ctx.notes[f"eval/{k}_std_{name}"] = NO_SUBSET_SPREAD
        guarded(out, [f"eval/precision_{name}", f"eval/recall_{name}"], lambda: dict(zip(
            (f"eval/precision_{name}", f"eval/recall_{name}"),
            precision_recall(ref.features, feats, s.pr_k, device=ctx.device, seed=ctx.seed))))
        if logits is not None and space.has_inception_logits:
            guarded(out, [f"eval/is_{name}"],
                    lambda: {f"eval/is_{name}": inception_score(logits)})
        guarded(out, [f"eval/floor_fid_{name}", f"eval/floor_kid_{name}"],
                lambda: _floor(ctx, space, name, len(raw), floors))
    if floors:
        ctx.notes["floor"] = (
            f"real data (eval/floor_fid_<set>, eval/floor_kid_<set>): against the "
            f"{len(ref.features):,} {s.reference_split} images, "
            + "; ".join(f"at {n:,} images: {where}" for n, where in sorted(floors.items())))
    if not space.has_inception_logits:
        ctx.notes["eval/is_*"] = (f"the Inception Score needs Inception's classes; FID here is "
                                  f"in {space.name}")
    return out


def _floor(ctx: Context, space, name: str, n: int, floors: dict) -> dict:
    """eval/floor_fid_<name>, eval/floor_kid_<name> (and floor_fidz / floor_kidz where the
    space reports raw values): real images disjoint from the reference split, as many as the
    set has (or all there are), against the reference; cached per machine (real_floor)."""
    s = ctx.settings
    f = real_floor(ctx.data, s.reference_split, space, n, ctx.device, s.kid_subsets,
                   s.kid_subset_size, s.batch_size)
    floors[n] = f"{f['images']}" + ("" if f["n"] == n else f" (all there are of {n:,})")
    if space.reports_raw:
        return {f"eval/floor_fid_{name}": f["fid_raw"], f"eval/floor_kid_{name}": f["kid_raw"],
                f"eval/floor_fidz_{name}": f["fid"], f"eval/floor_kidz_{name}": f["kid"]}
    return {f"eval/floor_fid_{name}": f["fid"], f"eval/floor_kid_{name}": f["kid"]}


def _features_of(space, batches, device, batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    feats, logits = [], []
    for images in batches:
        f, lg = extract(space, images, device, batch_size, raw=True)
        feats.append(f)
        if lg is not None:
            logits.append(lg)
    return np.concatenate(feats), (np.concatenate(logits) if logits else None)
