"""The "reconstruction" group (UAE Table 2, MVU-AE Table 1): how close the deterministic
reconstruction D(mu(x)) of each test image is to it, as test/mse, test/psnr, test/ssim and
test/lpips, and test/mse_sum (summed over pixels, Takida Tables 4 and 6). reconstruction_mse
and psnr are also the per-epoch validation metrics (engine/train.py, engine/run/trial.py)."""
from __future__ import annotations

import math

import torch

from engine.eval.context import Context, guarded
from models import float_images


@torch.no_grad()
def reconstruction_mse(model, images: torch.Tensor, batch_size: int = 512) -> float:
    """Mean squared error per pixel of the deterministic reconstruction D(mu(x)), each batch
    of `images` (uint8 or float, on any device) converted on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = float_images(images[i:i + batch_size], device)
        total += (model.reconstruct(x) - x).pow(2).flatten(1).mean(1).sum().item()
    return total / len(images)


def psnr(mse: float, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE), of the mean MSE over the set (inf for a perfect one)."""
    return 10 * math.log10(data_range ** 2 / mse) if mse > 0 else math.inf


def ssim_kernel(shape: tuple[int, ...]) -> int:
    """Wang et al.'s 11x11 Gaussian window, or the largest odd size that fits smaller images
    (7 for 8x8 digits)."""
    side = min(shape[-2:])
    return min(11, side if side % 2 else side - 1)


@torch.no_grad()
def ssim(model, images: torch.Tensor, device, batch_size: int) -> float:
    """Mean SSIM of D(mu(x)) against x (torchmetrics; Gaussian window, sigma 1.5, range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn
    k = ssim_kernel(images.shape)
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = float_images(images[i:i + batch_size], device)
        total += float(ssim_fn(model.reconstruct(x).clamp(0, 1), x, data_range=1.0,
                               kernel_size=k, reduction="sum"))
    return total / len(images)


@torch.no_grad()
def reconstruction(ctx: Context) -> dict:
    images = ctx.data.test.images.to(ctx.device)  # uint8 (or float): a batch at a time below
    bs = ctx.settings.batch_size
    mse = reconstruction_mse(ctx.model, images, bs)
    out: dict = {"test/mse": mse, "test/psnr": psnr(mse),
                 "test/mse_sum": mse * math.prod(images.shape[1:])}
    guarded(out, ["test/ssim"],
            lambda: {"test/ssim": ssim(ctx.model, images, ctx.device, bs)})
    lp = ctx.lpips()
    if isinstance(lp, str):
        out["test/lpips"] = lp
    else:
        def lpips_of(x: torch.Tensor) -> torch.Tensor:  # (B,) of one batch
            return lp(ctx.model.reconstruct(x).clamp(0, 1), x)
        guarded(out, ["test/lpips"], lambda: {"test/lpips": float(torch.cat([
            lpips_of(float_images(images[i:i + bs])) for i in range(0, len(images), bs)]).mean())})
    return out
