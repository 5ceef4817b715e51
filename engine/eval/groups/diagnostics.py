"""The "diagnostics" group (Takida Table 1; Dai & Wipf; UAE Sec. 4.2 / App. B): on a subset
of training images, Takida's criteria (expected gaps, ELS, KL, sigma_z^2, MI, MSE), the
encoder spectrum (active and inactive dimensions, gamma; saved as encoder_spectrum.json) and
the variance of the encoder's gradient under each sampling scheme
(engine/eval/metrics/diagnostics.py computes them)."""
from __future__ import annotations

import numpy as np

from engine.eval.context import Context, guarded, subset
from engine.eval.metrics.diagnostics import encoder_spectrum, gradient_variance, takida_table1
from engine.files import write_json_atomic
from models import float_images


def diagnostics(ctx: Context) -> dict:
    s = ctx.settings
    train = float_images(subset(ctx.data.train.images, s.diagnostic_images, ctx.seed),
                         ctx.device)  # (n, *X): a subset (1,000 by default), as floats
    out: dict = {}
    # Takida's MSE is summed over pixels, on training images: named apart from test/mse
    names = {"mse": "mse_train_sum", "mse_per_pixel": "mse_train"}
    guarded(out, ["eval/takida_table1"], lambda: {
        f"eval/{names.get(k, k)}": v
        for k, v in takida_table1(ctx.model, train, seed=ctx.seed).items()})

    def spectrum() -> dict:
        summary, eigenvalues = encoder_spectrum(ctx.model, train)
        if ctx.out_dir is not None:
            write_json_atomic(ctx.out_dir / "encoder_spectrum.json",
                              [float(v) for v in np.asarray(eigenvalues)])
        return {f"eval/{k}": v for k, v in summary.items()}
    guarded(out, ["eval/encoder_spectrum"], spectrum)
    batch = train[:min(len(train), ctx.model.cfg.batch_size)]  # one minibatch, held fixed
    guarded(out, ["eval/grad_var"], lambda: {
        f"eval/{k}": v for k, v in gradient_variance(
            ctx.model, batch, draws=s.grad_var_draws, seed=ctx.seed).items()})
    return out
