"""The evaluation every trial gets at its end: every metric the four papers report.

`evaluate(model, data, device, settings, seed)` runs the metric groups named in
`settings.metrics` (engine/eval/groups/: one module per group, and the paper table each
serves) and returns flat namespaced metrics plus "notes": for each metric that could not be
computed, one line saying why (the report prints them), and the feature space FID was
computed in. A group that fails is noted, never fatal to the trial.

What is evaluated and with how many samples is `EvalSettings` (engine/eval/settings.py);
the names other code imports from here (the settings, the group names, the validation
metrics reconstruction_mse and psnr) are re-exported.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from engine.eval.context import Context
from engine.eval.groups import GROUPS, parse_groups
from engine.eval.groups.diagnostics import diagnostics
from engine.eval.groups.fid import fid
from engine.eval.groups.latent import latent
from engine.eval.groups.likelihood import likelihood
from engine.eval.groups.reconstruction import (psnr, reconstruction, reconstruction_mse, ssim,
                                               ssim_kernel)
from engine.eval.groups.variance import variance
from engine.eval.metrics import evaluating
from engine.eval.settings import DENSITY_SETS, EvalSettings

__all__ = ["evaluate", "EVALUATIONS", "EvalSettings", "DENSITY_SETS", "GROUPS", "parse_groups",
           "Context", "reconstruction_mse", "psnr", "ssim", "ssim_kernel"]

# group name (engine/eval/groups: GROUPS) -> the function computing its metrics
EVALUATIONS: dict[str, Callable[[Context], dict]] = {
    "reconstruction": reconstruction, "fid": fid, "latent": latent,
    "likelihood": likelihood, "diagnostics": diagnostics, "variance": variance,
}


def evaluate(model, data, device=torch.device("cpu"), settings: EvalSettings | None = None,
             seed: int = 0, out_dir: str | Path | None = None,
             drawn: dict | None = None) -> dict:
    """Every asked-for group's metrics (floats) and "notes" {metric or group: why not
    computed, "features": the FID feature space}; "time/eval_<group>_s" per group. `drawn`,
    where given, is filled with {density name: the (n, D) latents sampled from it}."""
    settings = settings or EvalSettings()
    device = torch.device(device)
    ctx = Context(model, data, device, settings, seed, Path(out_dir) if out_dir else None,
                  drawn={} if drawn is None else drawn)
    # every CUDA device's RNG is reseeded by manual_seed, so every one is forked
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    metrics: dict = {}
    with evaluating(model):  # each module's own training flag restored after
        for name in settings.metrics:
            start = time.perf_counter()
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)  # each group's draws independent of the others
                try:
                    for k, v in EVALUATIONS[name](ctx).items():
                        if isinstance(v, str):
                            ctx.notes[k] = v
                        else:
                            metrics[k] = float(v)
                except Exception as e:  # noqa: BLE001  (never lose the trial for a metric)
                    ctx.notes[name] = f"failed: {type(e).__name__}: {e}"
            metrics[f"time/eval_{name}_s"] = time.perf_counter() - start
    return {**metrics, "notes": ctx.notes}
