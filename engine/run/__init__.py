"""Running a search: its flags (cli), its typed spec (spec), the pipeline (search), the run
folder (folder), --resume (resume), every Ray call (ray_backend), one trial's loop (trial), and
the finished run a study's `after` step receives (finished).

A study script needs only what this package exports: `Search`, `Row`, `grid`, `run`."""
from engine.run.search import BadInput, Row, Search, grid, run

__all__ = ["Search", "Row", "grid", "run", "BadInput"]
