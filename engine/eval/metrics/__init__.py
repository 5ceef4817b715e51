"""The evaluation suite's metrics, one module per family (engine/eval/evaluate.py runs them)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, cfg=None) -> Iterator[None]:
    """Eval mode (BatchNorm on its running statistics), and `cfg` in place of model.cfg (which
    is frozen, so it is swapped, not edited), for the duration; every submodule's training
    flag and the config are restored even when the body raises."""
    modes = [(m, m.training) for m in model.modules()]
    old_cfg = model.cfg
    model.eval()
    if cfg is not None:
        model.cfg = cfg
    try:
        yield
    finally:
        model.cfg = old_cfg
        for m, training in modes:
            m.training = training
