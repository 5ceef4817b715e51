"""TensorBoard for one trial: every reported metric as a scalar, image grids of
reconstructions and samples at intervals, and the HParams summary at the end, in
<trial dir>/tensorboard. `tensorboard --logdir <run folder>` shows every trial of a search
side by side, filterable by configuration field in the HPARAMS tab.
"""
from __future__ import annotations

import os
import sys

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid as _make_grid

import models
from models import float_images

GRID = 16  # images per grid row
LEGIBLE = 64  # px: smaller images are enlarged (nearest) to at least this height in a grid


def make_grid(x: torch.Tensor, nrow: int) -> torch.Tensor:
    """torchvision's grid of (B, C, H, W) images, each first enlarged by the whole factor that
    brings it to LEGIBLE px (nearest neighbour: the pixels stay visible as pixels), so a grid
    of 16 8x8 digits is 1,058 px wide (64 px each, 2 px apart) rather than 162."""
    factor = max(1, -(-LEGIBLE // x.shape[-2]))  # ceil: 8 px -> 8x, 28 -> 3x, 64 -> 1x
    if factor > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
    return _make_grid(x, nrow=nrow)


class TrialBoard:
    def __init__(self, trial_dir: str, spec, data, start_epoch: int):
        """`spec`: the trial's engine.run.spec.TrialSpec."""
        # purge_step drops what a crashed run logged after its last checkpoint
        self.writer = SummaryWriter(os.path.join(trial_dir, "tensorboard"),
                                    purge_step=start_epoch)
        self.spec, self.data = spec, data
        self.every = spec.image_every
        self.fixed = float_images(data.val.images[:GRID])  # the same inputs each time: (16, C, H, W)
        self.prior_z = torch.randn(GRID, spec.config.latent_dim,
                                   generator=torch.Generator().manual_seed(0))

    def epoch(self, model, metrics: dict, epoch: int, final: bool,
              drawn: dict | None = None) -> None:
        """`drawn`: {density name: (n, D) latents} the final evaluation sampled; the final
        grids decode their first 32 rather than fit the density a second time."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                self.writer.add_scalar(k, v, epoch)
        if final or epoch % self.every == 0 or epoch == 1:
            self._guard("images", self._images, model, epoch)
        if final:
            self._guard("density samples", self._density_samples, model, epoch, drawn or {})
            self._guard("hparams", self._hparams, metrics)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _guard(self, what, fn, *args) -> None:
        # A picture that cannot be drawn must not cost the trial its result; say so.
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            print(f"tensorboard: {what} not written: {type(e).__name__}: {e}", file=sys.stderr)
            self.writer.add_text("errors", f"{what} not written: {e}")

    @torch.no_grad()
    def _images(self, model, epoch: int) -> None:
        model.eval()
        dev = next(model.parameters()).device
        x = self.fixed.to(dev)
        # top row the inputs, bottom row their reconstructions D(mu(x))
        self.writer.add_image("reconstructions", make_grid(
            torch.cat([x, model.reconstruct(x)]).clamp(0, 1).cpu(), nrow=GRID), epoch)
        self.writer.add_image("samples/prior", make_grid(
            model.decode(self.prior_z.to(dev)).clamp(0, 1).cpu(), nrow=GRID), epoch)

    def _density_samples(self, model, epoch: int, drawn: dict) -> None:
        dev = next(model.parameters()).device
        # the prior's grid is drawn every image epoch (_images); the fitted densities' come
        # from the evaluation: fitting a GMM or training a second stage again for 32 images
        # doubled a 2-Stage trial's end (benchmarks/trial_end.py)
        fitted = {name: z[:2 * GRID] for name, z in drawn.items() if name != "prior"}
        if not fitted:  # the evaluation sampled no fitted density: the config's, here
            # fitting may train (a second-stage VAE), so no no_grad around it
            density = models.fit_density(model, self.data.train.images, seed=self.spec.seed)
            fitted = {model.cfg.density: density.sample(2 * GRID, seed=0)}
        for name, z in fitted.items():  # decoded as the FID decoded them (VQ: through a code)
            with torch.no_grad():
                x = model.generate(z.to(dev))
            self.writer.add_image(f"samples/{name}",
                                  make_grid(x.clamp(0, 1).cpu(), nrow=GRID), epoch)

    def _hparams(self, metrics: dict) -> None:
        hp = {"label": self.spec.label, "seed": self.spec.seed,
              **{k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in self.spec.params["config"].items()}}
        final = {f"final/{k}": v for k, v in metrics.items()
                 if isinstance(v, float) and k.split("/")[0] in ("val", "test", "eval")}
        writer = self.writer._get_file_writer()
        for summary in hparams(hp, final):  # experiment, session start, session end
            writer.add_summary(summary)
        for k, v in final.items():  # the values the HParams table shows
            self.writer.add_scalar(k, v)
