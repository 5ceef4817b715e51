"""The "latent" group (MVU-AE Table 4): the variance of the test images' latents
(eval/latent_var) and the perceptual path length between them, measured in LPIPS (eval/ppl)."""
from __future__ import annotations

import torch

from engine.eval.context import Context
from engine.eval.metrics.latent import encoded_latents, latent_variance, perceptual_path_length


@torch.no_grad()
def latent(ctx: Context) -> dict:
    images = ctx.data.test.images.to(ctx.device)
    out: dict = {f"eval/{k}": v for k, v in latent_variance(ctx.model, images).items()}
    lp = ctx.lpips()
    if isinstance(lp, str):
        out["eval/ppl"] = f"PPL is measured in LPIPS: {lp}"
        return out
    z, _ = encoded_latents(ctx.model, images)
    out["eval/ppl"] = perceptual_path_length(
        ctx.model, ctx.settings.ppl_samples, lp, ctx.settings.ppl_epsilon, latents=z,
        seed=ctx.seed, batch_size=ctx.settings.batch_size)["ppl"]
    return out
