"""The evaluation suite's metrics, one module per family (the groups of engine/eval/groups/
call them), and `evaluating`, the eval mode they run the model in."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm on its running statistics) for the duration; every submodule's
    training flag is restored even when the body raises."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
