"""The "likelihood" group (Takida Table 7): the negative log-likelihood of test images, a
k-sample importance-weighted bound (eval/nll, and eval/nll_bpd in bits per dimension)."""
from __future__ import annotations

from engine.eval.context import Context, subset
from engine.eval.metrics.likelihood import NotComputable, iwae_nll


def likelihood(ctx: Context) -> dict:
    s = ctx.settings
    images = subset(ctx.data.test.images, s.nll_images, ctx.seed)
    try:  # the training images stay on the CPU: only *_i_mle reads them, batch by batch
        r = iwae_nll(ctx.model, images.to(ctx.device), k=s.iwae_k, seed=ctx.seed,
                     train_images=ctx.data.train.images)
    except NotComputable as e:
        return {"eval/nll": str(e), "eval/nll_bpd": str(e)}
    return {"eval/nll": r["nll"], "eval/nll_bpd": r["nll_bpd"]}
