"""models/schedules.py: the learning rate per epoch, against torch's own schedulers stepped once
per epoch, and the config's checks of the schedule's fields."""
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


@pytest.mark.parametrize("fields, says", [
    ({"lr_schedule": "plateau"}, "lr_schedule='plateau' is not one of constant, step, cosine"),
    ({"lr_step_epochs": 0}, "lr_step_epochs=0 must be an integer >= 1"),
    ({"lr_step_factor": 0.0}, "lr_step_factor=0.0 must be > 0"),
    ({"lr_step_factor": float("inf")}, "lr_step_factor=inf must be finite"),
])
def test_a_bad_schedule_is_one_line(fields, says):
    with pytest.raises(ConfigError) as e:
        Config(**fields)
    assert says in str(e.value) and "\n" not in str(e.value)
