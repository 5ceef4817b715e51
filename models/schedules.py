"""Learning-rate schedules: the factor on `lr` in each epoch (1-based) of a run of `epochs`.

Each is a pure function of the epoch and of the losses it monitors (`history`: one value per
finished epoch, which the trial keeps in its checkpoint), so that a trial resumed from a
checkpoint takes the same rate as one that never stopped, with no scheduler object to save.

- "constant": lr throughout (UAE, Takida, MVU-AE as the papers state them).
- "step": lr * lr_step_factor ** floor((epoch - 1) / lr_step_epochs): Dai & Wipf halve it every
  150 epochs of the first stage and every 300 of the second (Appendix D; their code,
  daib13/TwoStageVAE demo.py l. 49 and 69, `lr * lr_fac ** floor(epoch / lr_epochs)`, 0-based
  epochs); torch.optim.lr_scheduler.StepLR stepped once per epoch.
- "cosine": lr * (1 + cos(pi (epoch - 1) / epochs)) / 2, from lr in the first epoch towards 0;
  CosineAnnealingLR(T_max=epochs) stepped once per epoch.
- "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min", factor=lr_plateau_factor,
  patience=lr_plateau_patience) stepped once per epoch with the training loss of the epoch's
  last minibatch: the UAE authors' code (boschresearch/unscented-autoencoder, experiment.py,
  configure_optimizers: factor 0.5, patience 5, monitor "loss"), where "loss" is what
  training_step logs per step, so Lightning hands the scheduler the last batch's loss at each
  epoch's end, not the epoch's mean. The rate of an epoch replays torch's scheduler over the
  history, so the scheduler's own rules (relative threshold 1e-4, eps) are torch's.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .config import Config

History = Sequence[float]  # the monitored loss of epochs 1, 2, ... (at least epoch - 1 values)


def _constant(epoch: int, epochs: int, cfg: Config, history: History) -> float:
    return cfg.lr


def _step(epoch: int, epochs: int, cfg: Config, history: History) -> float:
    return cfg.lr * cfg.lr_step_factor ** ((epoch - 1) // cfg.lr_step_epochs)


def _cosine(epoch: int, epochs: int, cfg: Config, history: History) -> float:
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


def _plateau(epoch: int, epochs: int, cfg: Config, history: History) -> float:
    if len(history) < epoch - 1:
        raise ValueError(f"lr_schedule='plateau' needs the monitored loss of epochs 1..{epoch - 1}"
                         f", got {len(history)} value(s)")
    # torch's scheduler on a throwaway optimizer at the real lr (its eps compares real rates)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_plateau_factor, patience=cfg.lr_plateau_patience)
    for value in history[:epoch - 1]:
        sched.step(value)
    return opt.param_groups[0]["lr"]


LR_SCHEDULES: dict[str, Callable[[int, int, Config, History], float]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "plateau": _plateau,
}


# the schedules whose rate at an epoch depends on the run's total epochs: a budget that ends
# each run at its plateau (an unknown total) cannot serve them
NEEDS_TOTAL_EPOCHS = frozenset({"cosine"})


def needs_total_epochs(cfg: Config) -> bool:
    """Whether cfg's schedule anneals over the total number of epochs (cosine), so that a run
    whose length is not known in advance cannot follow it."""
    return cfg.lr_schedule in NEEDS_TOTAL_EPOCHS


def lr_at(cfg: Config, epoch: int, epochs: int, history: History = ()) -> float:
    """The learning rate of `epoch` (1-based) of `epochs`, after the monitored losses `history`
    of the epochs before it (only "plateau" reads them)."""
    return LR_SCHEDULES[cfg.lr_schedule](epoch, epochs, cfg, history)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
