"""What each metric group is given (`Context`: the model, the data, the settings, a seed, and
what the groups share) and the helpers the groups have in common (`guarded`, `subset`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from engine.eval.settings import EvalSettings


@dataclass
class Context:
    model: torch.nn.Module  # eval mode, on `device`
    data: object  # engine.data.Dataset
    device: torch.device
    settings: EvalSettings
    seed: int
    out_dir: Path | None  # the trial's folder, for arrays (spectra); None: not saved
    notes: dict = field(default_factory=dict)  # metric -> why it was not computed
    cache: dict = field(default_factory=dict)  # shared between groups (LPIPS, features)
    # density name -> the (n, D) latents its FID decoded, for the caller (the trial's board
    # draws its grids from them instead of fitting the density again)
    drawn: dict = field(default_factory=dict)

    def lpips(self):
        """The LPIPS distance of settings.lpips_net (loaded once, shared by the groups that
        measure in it), or why it cannot be loaded (a str)."""
        if "lpips" not in self.cache:
            # lpips and torchvision's backbones load only where a group asks for LPIPS
            from engine.eval.metrics.pretrained import WeightsMissing, load_lpips
            try:
                self.cache["lpips"] = load_lpips(self.settings.lpips_net, device=self.device)
            except WeightsMissing as e:
                self.cache["lpips"] = str(e)
        return self.cache["lpips"]


def guarded(out: dict, names: list[str], step: Callable[[], dict]) -> None:
    """out.update(step()); if it raises, each of `names` gets the reason instead, so one
    failing metric never takes the others of its group with it."""
    try:
        out.update(step())
    except Exception as e:  # noqa: BLE001
        out.update({n: f"failed: {type(e).__name__}: {e}" for n in names})


def subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images drawn without replacement by `seed` (all for n = 0 or n >= len), so a subset
    is not the first images of a split that is ordered (patches: one photo, then the next)."""
    if not n or n >= len(images):
        return images
    gen = torch.Generator().manual_seed(seed)
    return images[torch.randperm(len(images), generator=gen)[:n].sort().values]
