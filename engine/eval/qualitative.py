"""The pictures a paper's qualitative figure shows (UAE Fig. 2: inputs, reconstructions,
samples, interpolations), saved by each trial at its end as uint8 arrays beside its results,
so that the report (which imports no torch) can lay every row of a run side by side.

<trial>/qualitative.npz, each array (N, H, W, C) uint8:
  inputs            the first N test images
  reconstructions   D(mu(x)) of them (through the codebook where there is one)
  samples/<d>       N samples through each density the evaluation sampled (its own draws,
                    decoded as its FID decoded them), and N from the N(0, I) prior always
  interpolation     2N: N decodings along the slerp between the encoder means of test
                    images 0 and 1, t = 0 .. 1 (the path Takida Sec. 6.2 / RAE evaluate),
                    then N between images 2 and 3
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.eval.metrics.latent import slerp
from engine.files import write_atomic
import models
from models import float_images

FILE = "qualitative.npz"
N = 8  # images per strip


def _uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8, rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def qualitative_images(model, test_images: torch.Tensor, drawn: dict, device,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """The strips of the module docstring for `model` (in eval mode while drawn)."""
    was_training = model.training
    model.eval()
    try:
        x = float_images(test_images[:N], device)  # (N, C, H, W)
        out = {"inputs": _uint8(x), "reconstructions": _uint8(model.reconstruct(x))}
        prior = torch.randn(N, model.cfg.latent_dim,
                            generator=torch.Generator().manual_seed(seed))
        for name, z in {models.PRIOR: prior, **drawn}.items():
            out[f"samples/{name}"] = _uint8(model.generate(z[:N].to(device)))
        mu = model.encode(x[:4])[0]  # (4, D): two pairs of ends
        t = torch.linspace(0, 1, N, device=mu.device)
        paths = [slerp(mu[i:i + 1].expand(N, -1), mu[i + 1:i + 2].expand(N, -1), t)
                 for i in (0, 2)]
        out["interpolation"] = _uint8(model.generate(torch.cat(paths)))  # (2N, ...)
        return out
    finally:
        model.train(was_training)


def save_qualitative(model, test_images: torch.Tensor, drawn: dict, device, trial_dir: str,
                     seed: int = 0) -> None:
    """qualitative_images into <trial_dir>/qualitative.npz, atomically."""
    arrays = qualitative_images(model, test_images, drawn, device, seed)

    def write(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
    write_atomic(Path(trial_dir) / FILE, write)
