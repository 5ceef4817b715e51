"""What a study's `after` step receives: the finished run as the report reads it, with the run's
typed spec, so a study's own table or figure never parses search.json or the trials' files."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.report import load_curves, load_trials
from engine.run.types import RunRow, RunSpec


@dataclass(frozen=True)
class FinishedRun:
    folder: Path
    spec: RunSpec  # the run's own settings (for --resume: as search.json saved them)
    trials: pd.DataFrame  # engine.report.load_trials: one row per trial, of every status

    @classmethod
    def read(cls, folder: Path, spec: RunSpec) -> "FinishedRun":
        return cls(Path(folder), spec, load_trials(folder))

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "completed"]

    @functools.cached_property
    def curves(self) -> pd.DataFrame:
        """engine.report.load_curves: every per-epoch metric, long (read on first use)."""
        return load_curves(self.folder)

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """The report's table (report/table.csv: "<metric> mean" / "<metric> std" columns),
        indexed by row label; the report is written before the study's step runs."""
        return pd.read_csv(self.folder / "report" / "table.csv", index_col="label")

    def row(self, label: str) -> RunRow:
        return next(r for r in self.spec.rows if r.label == label)

    def trial_files(self, label: str, name: str) -> list[Path]:
        """The file `name` of each trial of row `label` that wrote one (e.g. a diagnostic's
        encoder_spectrum.json), in seed order."""
        folders = self.trials.loc[self.trials["label"] == label, "trial"]
        return [f for f in (self.folder / t / name for t in folders) if f.is_file()]

    def report_path(self, name: str) -> Path:
        """Where a study's own report file goes: <run>/report/<name>."""
        return self.folder / "report" / name
