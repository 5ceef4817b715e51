"""Learning-rate schedules: the factor on `lr` in each epoch (1-based) of a run of `epochs`.

Each is a pure function of the epoch, so that a trial resumed from a checkpoint takes the same
rate as one that never stopped, with no scheduler state to save.

- "constant": lr throughout (UAE, Takida, MVU-AE as the papers state them).
- "step": lr * lr_step_factor ** floor((epoch - 1) / lr_step_epochs): Dai & Wipf halve it every
  150 epochs of the first stage and every 300 of the second (Appendix D; their code,
  daib13/TwoStageVAE demo.py l. 49 and 69, `lr * lr_fac ** floor(epoch / lr_epochs)`, 0-based
  epochs); torch.optim.lr_scheduler.StepLR stepped once per epoch.
- "cosine": lr * (1 + cos(pi (epoch - 1) / epochs)) / 2, from lr in the first epoch towards 0;
  CosineAnnealingLR(T_max=epochs) stepped once per epoch.
"""
from __future__ import annotations

import math
from typing import Callable

from .config import Config


def _constant(epoch: int, epochs: int, cfg: Config) -> float:
    return 1.0


def _step(epoch: int, epochs: int, cfg: Config) -> float:
    return cfg.lr_step_factor ** ((epoch - 1) // cfg.lr_step_epochs)


def _cosine(epoch: int, epochs: int, cfg: Config) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


LR_SCHEDULES: dict[str, Callable[[int, int, Config], float]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
}


def lr_at(cfg: Config, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (1-based) of `epochs`."""
    return cfg.lr * LR_SCHEDULES[cfg.lr_schedule](epoch, epochs, cfg)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
