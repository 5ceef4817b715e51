"""The evaluation every trial gets at its end, on the test split.

For now the reconstruction error that the model library gives directly: `test/mse` (per
pixel, of the deterministic reconstruction D(mu(x))) and `test/psnr`. The evaluation suite
(FID, LPIPS, SSIM, ...) extends `EVALUATIONS`; the engine calls only `evaluate`.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def reconstruction_mse(model, images: torch.Tensor, batch_size: int = 512) -> float:
    """Mean squared error per pixel of the deterministic reconstruction D(mu(x))."""
    model.eval()
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        total += (model.reconstruct(x) - x).pow(2).flatten(1).mean(1).sum().item()
    return total / len(images)


def psnr(mse: float, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE), of the mean MSE over the set (inf for a perfect one)."""
    return 10 * math.log10(data_range ** 2 / mse) if mse > 0 else math.inf


def test_reconstruction(model, data, device) -> dict[str, float]:
    mse = reconstruction_mse(model, data.test.images.to(device))
    return {"test/mse": mse, "test/psnr": psnr(mse)}


EVALUATIONS = [test_reconstruction]


def evaluate(model, data, device=torch.device("cpu")) -> dict[str, float]:
    """Every evaluation's metrics for a trained model, namespaced ("test/mse", ...)."""
    out: dict[str, float] = {}
    for fn in EVALUATIONS:
        out.update(fn(model, data, device))
    return out
