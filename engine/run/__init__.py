"""Running a search: its types (types), its flags (cli), its typed spec (spec), the pipeline
(search), the run folder (folder), --resume (resume), every Ray call (ray_backend), one
trial's loop (trial), and the finished run a study's `after` step receives (finished).

A study script needs only what this package exports: `Search`, `Row`, `grid`, `run`,
`exit_with` (its `__main__`'s end). They are looked up when first used (PEP 562), so that a
trial worker, which imports engine.run.ray_backend and so this package, does not import the
command line, the run folder and the pipeline with it."""
from __future__ import annotations

import importlib

_EXPORTS = {"Search": "engine.run.types", "Row": "engine.run.types", "grid": "engine.run.types",
            "BadInput": "engine.run.types", "run": "engine.run.search",
            "exit_with": "engine.run.console"}

__all__ = ["Search", "Row", "grid", "run", "BadInput", "exit_with"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine.run' has no attribute {name!r}")
