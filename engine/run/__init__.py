"""Running a search: its flags (cli), its typed spec (spec), the pipeline (search), the run
folder (folder), --resume (resume), every Ray call (ray_backend) and one trial's loop (trial).

A study script needs only what this package exports: `Search`, `Row`, `grid`, `run`."""
from engine.run.search import BadInput, Row, Search, grid, run

__all__ = ["Search", "Row", "grid", "run", "BadInput"]
