"""models/schedules.py: the learning rate per epoch, against torch's own schedulers stepped once
per epoch (ReduceLROnPlateau with each epoch's loss), and the config's checks of the schedule's
fields."""
from __future__ import annotations

import pytest
import torch

from models import Config, ConfigError
from models.schedules import lr_at


def torch_rates(make, epochs: int, lr: float) -> list[float]:
    """The rate torch's scheduler gives each epoch when stepped after every epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("step, factor", [(150, 0.5), (3, 0.5), (1, 0.9), (4, 2.0)])
def test_step_is_steplr(step, factor):
    cfg = Config(lr=1e-3, lr_schedule="step", lr_step_epochs=step, lr_step_factor=factor)
    epochs = 400 if step == 150 else 12
    expected = torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step, factor), epochs,
                           1e-3)
    assert [lr_at(cfg, e, epochs) for e in range(1, epochs + 1)] == pytest.approx(expected,
                                                                                rel=1e-12)


def test_dai_wipf_halve_the_rate_every_150_epochs():
    # their demo.py: lr * 0.5 ** floor(epoch / 150), epoch 0-based: 1e-4 until their epoch 149
    cfg = Config(lr=1e-4, lr_schedule="step", lr_step_epochs=150, lr_step_factor=0.5)
    assert [lr_at(cfg, e, 400) for e in (1, 150, 151, 300, 301, 400)] == pytest.approx(
        [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5, 2.5e-5])


@pytest.mark.parametrize("epochs", [1, 7, 100])
def test_cosine_is_cosineannealinglr(epochs):
    cfg = Config(lr=3e-3, lr_schedule="cosine")
    expected = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, epochs),
                           epochs, 3e-3)
    assert [lr_at(cfg, e, epochs) for e in range(1, epochs + 1)] == pytest.approx(expected,
                                                                                rel=1e-9)


def test_constant_is_lr():
    assert {lr_at(Config(lr=2e-4), e, 50) for e in range(1, 51)} == {2e-4}


def plateau_rates(losses: list[float], lr: float, factor: float, patience: int) -> list[float]:
    """The rate a live ReduceLROnPlateau gives each epoch when stepped after every epoch with
    that epoch's loss: the protocol of the UAE authors' Lightning code."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=factor,
                                                       patience=patience)
    rates = []
    for loss in losses:
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(loss)
    return rates


@pytest.mark.parametrize("factor, patience", [(0.5, 5), (0.1, 0), (0.9, 2)])
def test_plateau_is_reduce_lr_on_plateau_stepped_per_epoch(factor, patience):
    # a falling, noisy, then flat loss: improvements, plateaus and several reductions
    g = torch.Generator().manual_seed(0)
    losses = (torch.linspace(1.0, 0.2, 40) + 0.05 * torch.rand(40, generator=g)).tolist()
    losses += [0.2] * 40
    cfg = Config(lr=5e-3, lr_schedule="plateau", lr_plateau_factor=factor,
                 lr_plateau_patience=patience)
    ours = [lr_at(cfg, e, 80, losses[:e - 1]) for e in range(1, 81)]
    assert ours == pytest.approx(plateau_rates(losses, 5e-3, factor, patience), rel=1e-12)
    assert len(set(ours)) > 2  # it did reduce, more than once


def test_plateau_halves_after_more_than_five_epochs_without_a_lower_loss():
    # the authors' code: factor 0.5, patience 5. A constant loss: epoch 1 sets the best, epochs
    # 2..7 are six bad epochs (> 5), so epoch 8 trains at lr/2; six more, epoch 14 at lr/4
    cfg = Config(lr=5e-3, lr_schedule="plateau")
    rates = [lr_at(cfg, e, 20, [1.0] * (e - 1)) for e in range(1, 21)]
    assert rates == pytest.approx([5e-3] * 7 + [2.5e-3] * 6 + [1.25e-3] * 6 + [6.25e-4])
    # a loss that keeps falling by more than torch's relative threshold (1e-4) never reduces
    assert {lr_at(cfg, e, 20, [1 - 0.01 * i for i in range(e - 1)]) for e in range(1, 21)} \
        == {5e-3}


def test_plateau_without_its_history_says_so():
    with pytest.raises(ValueError, match="needs the monitored loss of epochs 1..3, got 1"):
        lr_at(Config(lr_schedule="plateau"), 4, 10, [0.5])


@pytest.mark.parametrize("fields, says", [
    ({"lr_schedule": "linear"},
     "lr_schedule='linear' is not one of constant, step, cosine, plateau"),
    ({"lr_plateau_factor": 1.0}, "lr_plateau_factor=1.0 must be in (0, 1)"),
    ({"lr_plateau_factor": 0.0}, "lr_plateau_factor=0.0 must be in (0, 1)"),
    ({"lr_plateau_patience": -1}, "lr_plateau_patience=-1 must be an integer >= 0"),
    ({"lr_step_epochs": 0}, "lr_step_epochs=0 must be an integer >= 1"),
    ({"lr_step_factor": 0.0}, "lr_step_factor=0.0 must be > 0"),
    ({"lr_step_factor": float("inf")}, "lr_step_factor=inf must be finite"),
])
def test_a_bad_schedule_is_one_line(fields, says):
    with pytest.raises(ConfigError) as e:
        Config(**fields)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_only_cosine_reads_the_total_epochs_which_an_auto_budget_does_not_know():
    """--epochs auto (engine/run/stopper.py) keeps "constant", "step" and "plateau", whose rate
    at an epoch is the same whatever the run's length (so the cap --max-epochs changes
    nothing before it), and refuses "cosine" (models/schedules.py NEEDS_TOTAL_EPOCHS), whose
    rate depends on it at every epoch."""
    from models.schedules import NEEDS_TOTAL_EPOCHS
    losses = [1.0 / (1 + e) for e in range(10)] + [0.1] * 30
    for schedule in ("constant", "step", "plateau", "cosine"):
        cfg = Config(lr=5e-3, lr_schedule=schedule, lr_step_epochs=7)
        short, long = ([lr_at(cfg, e, total, losses[:e - 1]) for e in range(1, 41)]
                       for total in (40, 400))
        assert (short != long) == (schedule in NEEDS_TOTAL_EPOCHS), schedule
    assert NEEDS_TOTAL_EPOCHS == {"cosine"}
