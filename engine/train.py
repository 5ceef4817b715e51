"""Train one model on one data set: the plain loop that every trial runs.

    python -m engine.train --preset UAE --dataset digits --epochs 30 --seed 0

Prints each epoch's training terms and validation MSE, then the test set's reconstruction MSE
and PSNR. It uses only the models' public API (build, loss, make_optimizer, lr_at, reconstruct).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import models
from engine.data import embedded_arch, load_dataset
from engine.run.cli import parse_assignments
from engine.eval.evaluate import psnr, reconstruction_mse
from engine.run.trial import train_epoch

__all__ = ["main", "train_epoch", "reconstruction_mse", "psnr"]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="UAE")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", help="the real data sets' folder (default $VAE_DATA_ROOT, "
                   "else ~/data)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override config fields, e.g. --set beta=0.5 latent_dim=8")
    args = p.parse_args(argv)
    seed_everything(args.seed)  # before building: the same initial weights per seed
    try:
        if args.epochs < 1:
            raise ValueError(f"--epochs {args.epochs} must be >= 1")
        cfg = embedded_arch(models.resolve(args.preset, **parse_assignments(
            "--set", args.set, models.Config())), args.dataset)  # as a search resolves it
        data = load_dataset(args.dataset, args.data_root)
        model = models.build(cfg, data.image_shape)  # e.g. an arch that does not fit the data
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    opt = model.make_optimizer()
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{cfg.name} on {args.dataset} {tuple(data.image_shape)}, arch={model.arch}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    monitored: list[float] = []  # what lr_schedule="plateau" reads
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        # as a search's trial takes it
        models.set_lr(opt, model.lr_at(epoch, args.epochs, monitored))
        terms = train_epoch(model, opt, data.train.images, cfg.batch_size, gen)
        monitored.append(terms["loss_last_batch"])
        val = reconstruction_mse(model, data.val.images)
        shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
        print(f"epoch {epoch:3d} {shown} val/mse={val:.5f} ({time.perf_counter() - t0:.1f}s)")
    test = reconstruction_mse(model, data.test.images)
    print(f"test/mse={test:.5f} test/psnr={psnr(test):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
