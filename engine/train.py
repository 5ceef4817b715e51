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
from engine.evaluate import psnr, reconstruction_mse
from engine.trial import train_epoch

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


def parse_assignments(flag: str, pairs: list[str], defaults) -> dict:
    """FIELD=VALUE pairs of a flag (--set, --eval-set) for the dataclass instance `defaults`,
    each VALUE cast to its field's default's type (a tuple: comma-separated; None: text).
    Raises ValueError, one line, on a pair that is malformed, names no field (with the
    closest field's name for a misspelling) or does not cast."""
    import dataclasses
    import difflib
    import re
    fields = [f.name for f in dataclasses.fields(defaults)]
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            # a field with the wrong separator ("latent_dim:8", "latent_dim 8") or none
            # ("latent_dim"): the name is right, the form is not, so say the form
            name = re.match(r"\w*", pair)[0]
            if name in fields:
                default = getattr(defaults, name)
                shown = (",".join(map(str, default)) if isinstance(default, tuple)
                         else "VALUE" if default is None else default)
                raise ValueError(f"{flag} {pair!r}: expected FIELD=VALUE, e.g. "
                                 f"{name}={pair[len(name):].lstrip(':= ') or shown}")
            key = name or pair  # the hint below names the misspelt field, not the whole pair
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(f"{flag} {pair!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(fields)}"
                             + (f" (did you mean {key} -> {close[0]}?)" if close else ""))
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                out[key] = tuple(v for v in value.split(",") if v)
            elif default is None or isinstance(default, str):
                out[key] = value
            else:
                out[key] = type(default)(value)
        except ValueError:
            raise ValueError(f"{flag} {pair!r}: {value!r} is not a valid "
                             f"{type(default).__name__} for {key}") from None
    return out


if __name__ == "__main__":
    sys.exit(main())
