"""Train one model on one data set: the plain loop that every trial runs.

    python -m engine.train --preset UAE --dataset digits --epochs 30 --seed 0
    python -m engine.train --preset UAE --epochs auto --max-epochs 200   # to val/mse's plateau

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
from engine.run.cli import epochs_value, parse_assignments
from engine.run.stopper import MIN_EPOCHS, PlateauStopper
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
    p.add_argument("--epochs", default="30", metavar="N|auto",
                   help="epochs, or auto: until val/mse's plateau (engine/run/stopper.py)")
    p.add_argument("--max-epochs", metavar="N", help="--epochs auto's cap")
    p.add_argument("--min-epochs", default=str(MIN_EPOCHS), metavar="N",
                   help=f"--epochs auto: no plateau before this many epochs ({MIN_EPOCHS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override config fields, e.g. --set beta=0.5 latent_dim=8")
    args = p.parse_args(argv)
    seed_everything(args.seed)  # before building: the same initial weights per seed
    try:
        epochs = epochs_value("--epochs", args.epochs, auto=True)
        plateau = None
        if epochs == "auto":
            if args.max_epochs is None:
                raise ValueError("--epochs auto needs a cap: give --max-epochs N")
            epochs = epochs_value("--max-epochs", args.max_epochs)
            plateau = PlateauStopper("val/mse", "min",
                                     epochs_value("--min-epochs", args.min_epochs), epochs)
            if plateau.min_epochs > epochs:
                raise ValueError(f"--min-epochs {plateau.min_epochs} is above --max-epochs "
                                 f"{epochs}")
        cfg = embedded_arch(models.resolve(args.preset, **parse_assignments(
            "--set", args.set, models.Config())), args.dataset)  # as a search resolves it
        data = load_dataset(args.dataset, args.data_root)
        model = models.build(cfg, data.image_shape)  # e.g. an arch that does not fit the data
        if plateau is not None and models.needs_total_epochs(cfg):
            raise ValueError(f"--epochs auto: lr_schedule={cfg.lr_schedule} anneals over the "
                             "total epochs, "
                             "unknown until the plateau; use lr_schedule=plateau or step")
    except ValueError as e:  # (BadInput is one)
        print(f"error: {e}", file=sys.stderr)
        return 2

    opt = model.make_optimizer()
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{cfg.name} on {args.dataset} {tuple(data.image_shape)}, arch={model.arch}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    monitored: list[float] = []  # what lr_schedule="plateau" reads
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        # as a search's trial takes it
        models.set_lr(opt, model.lr_at(epoch, epochs, monitored))
        terms = train_epoch(model, opt, data.train.images, cfg.batch_size, gen)
        monitored.append(terms["loss_last_batch"])
        val = reconstruction_mse(model, data.val.images)
        shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
        print(f"epoch {epoch:3d} {shown} val/mse={val:.5f} ({time.perf_counter() - t0:.1f}s)")
        if plateau is not None and plateau("train", {
                "epoch": epoch, "val/mse": val, **{f"train/{k}": v for k, v in terms.items()}}):
            print(plateau.reason("train"))
            break
    test = reconstruction_mse(model, data.test.images)
    print(f"test/mse={test:.5f} test/psnr={psnr(test):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
