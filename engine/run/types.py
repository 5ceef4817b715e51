"""The engine's run types, a leaf that imports no other engine/run module: a study's `Search`
and its `Row`s, a run's `RunSpec` (search.json) and `Resources`, one trial's `TrialSpec` (its
params.json), and `BadInput`, the one-line refusal of a bad flag or file. The command line,
the run folder and Ray import these; a trial worker imports these and not them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import models
from engine.convergence import MIN_EPOCHS, PATIENCE
from engine.eval.settings import EvalSettings
from engine.files import write_json_atomic


DEFAULT_PRECISION = "fp32"  # --precision's default, and a run's from before the flag


class BadInput(ValueError):
    """Input that must be refused before any trial starts (exit code 2)."""


@dataclass
class Search:
    """A study: `rows` maps a label (a table row) to a `Row(preset, fields, data)` or its
    shorthand: a preset name, a Config, a (preset, {field: value}) pair, or a (preset,
    {field: value}, data options) triple whose data options change the data the row trains
    and is evaluated on (engine/data/options.py, check_options: e.g. {"noise": {"partition":
    "spatial", "variance": 0.1}})."""
    name: str
    title: str
    rows: dict
    seeds: int = 3
    dataset: str = "mnist5k"  # the 5,000 real 28x28 digits; --smoke runs on SMOKE_DATASET
    # the budget: epochs per trial, or "auto": each trial until its metric's plateau
    # (engine/run/stopper.py), after at least `min_epochs`, at most `max_epochs`
    epochs: int | str = 30
    max_epochs: int | None = None  # the cap of "auto" (--max-epochs)
    min_epochs: int = MIN_EPOCHS  # (--min-epochs)
    # "auto" only: also end a trial once its metric has passed its best (engine/convergence.py
    # past_best), where what the study reads follows the training fit past that point
    early_stopping: bool = False
    metric: str = "val/mse"  # reported every epoch; ASHA and Optuna act on it
    mode: str = "min"
    table_metrics: tuple[str, ...] = ("test/mse", "test/psnr")
    paper: dict | None = None  # {"source", "setting", "numbers": {dataset: {label: {metric: v}}}}
    scheduler: str = "fifo"  # an ablation table wants every row at the full budget
    space: dict | None = None  # config field -> ray.tune domain, for --search optuna
    algorithm: str = "grid"  # the default of --search: "optuna" samples `space` on the first row
    samples: int = 20  # the default of --samples (trials of --search optuna)
    # may give "samples", "dataset" (else SMOKE_DATASET), "max_epochs" and "min_epochs"
    smoke: dict = field(default_factory=lambda: {"epochs": 2, "seeds": 1})
    # what every trial is evaluated on at its end (engine/eval/evaluate.py); --smoke shrinks the
    # sample counts to SMOKE_EVAL unless the flags give them
    evaluation: EvalSettings = field(default_factory=EvalSettings)




def grid(base: str | models.Config, **axes: list) -> dict:
    """Rows for the product of `axes` over a base preset, labelled "field=value, ...".

    grid("UAE", beta=[1e-4, 1e-3], kappa=[1e-3, 1.0]) -> four rows, e.g. "beta=0.0001 kappa=1.0"
    (space-separated, so that --rows can name them with commas)."""
    keys = list(axes)
    return {" ".join(f"{k}={v}" for k, v in zip(keys, values)):
            Row(base, dict(zip(keys, values))) for values in itertools.product(*axes.values())}


@dataclass(frozen=True)
class Row:
    """A row as a study declares it: a preset (a name or a Config), the fields it changes,
    and the data options it trains and is evaluated on (engine/data/options.py check_options, e.g.
    {"noise": {"partition": "spatial", "variance": 0.1}}), or None."""
    preset: str | models.Config
    fields: dict = field(default_factory=dict)
    data: dict | None = None

    @classmethod
    def of(cls, declared) -> "Row":
        """A Search.rows value: a Row, a preset name, a Config, (preset, {field: value}) or
        (preset, {field: value}, data options)."""
        if isinstance(declared, Row):
            return declared
        if isinstance(declared, tuple):
            return cls(*declared)
        return cls(declared)


@dataclass(frozen=True)
class RunRow:
    """A row of the run: its label, the resolved Config, the preset it names by itself where
    that is not its label (the report says which rows run a preset of another name), and its
    data options."""
    label: str
    config: models.Config
    preset: str | None = None
    data: dict | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "config": self.config.to_dict(),
                **({"preset": self.preset} if self.preset else {}),
                **({"data": self.data} if self.data else {})}


@dataclass(frozen=True)
class Resources:
    """Per DDP worker: CPUs and GPUs (fractions pack trials on one GPU); workers per trial."""
    cpu: float = 1.0
    gpu: float = 0.0
    workers: int = 1

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "gpu": self.gpu, "workers": self.workers}


@dataclass(frozen=True)
class RunSpec:
    """One run of a search, as search.json records it."""
    name: str
    title: str
    dataset: str
    data_root: str | None  # as given (absolute), None: each node's own $VAE_DATA_ROOT
    epochs: int  # the budget; with budget "auto" its cap (--max-epochs)
    seeds: tuple[int, ...]
    metric: str
    mode: str
    scheduler: str  # "fifo" | "asha"
    algorithm: str  # "grid" | "optuna" (--search; search.json's "search")
    rows: tuple[RunRow, ...]
    table_metrics: tuple[str, ...]
    paper: dict | None
    samples: int  # trials of a sampled search
    space: dict | None  # a sampled search's space as Optuna distributions (JSON)
    max_concurrent: int  # 0: as resources allow
    evaluation: EvalSettings
    image_every: int
    checkpoint_every: int  # epochs between checkpoints; 0: by time
    checkpoint_seconds: float  # at most one checkpoint per this much training; 0: by epochs
    precision: str  # what the networks train in: "fp32" | "bf16" | "fp16" (models.PRECISIONS)
    resources: Resources
    git: str
    argv: tuple[str, ...]
    trackers: tuple[str, ...] = ()  # --tracker: experiment trackers every trial also logs to
    # "fixed": every trial trains `epochs`; "auto" (--epochs auto): each until its metric's
    # plateau (engine/run/stopper.py), after at least `min_epochs`, at most `epochs`
    budget: str = "fixed"
    min_epochs: int = 0  # "auto" only
    plateau_patience: int = PATIENCE  # "auto" only: engine/run/stopper.py
    early_stopping: bool = False  # "auto" only: Search.early_stopping
    # engine/run/record.py: versions, Python, host, GPUs, start time, uncommitted changes; a
    # resumed run's keeps the first start's, each resume's own under "resumes"
    environment: dict = field(default_factory=dict, compare=False)
    # config field -> ray.tune domain: the Search's space that Optuna samples (the study's
    # live objects, not saved: search.json keeps `space`, their description)
    sampled: dict | None = field(default=None, compare=False)
    # --resume --more-seeds: label -> its seeds, for the rows given more than `seeds`
    row_seeds: dict = field(default_factory=dict)

    def seeds_of(self, label: str) -> tuple[int, ...]:
        """The seeds of row `label`: `seeds`, or more where --more-seeds added some."""
        return tuple(self.row_seeds.get(label, self.seeds))

    @property
    def configs(self) -> dict[str, models.Config]:
        return {r.label: r.config for r in self.rows}

    @property
    def data_options(self) -> dict[str, dict]:
        """label -> data options of the rows that have any."""
        return {r.label: r.data for r in self.rows if r.data}

    def to_json(self) -> dict:
        """search.json (its keys in the order runs have always written them)."""
        return {
            "name": self.name, "title": self.title, "dataset": self.dataset,
            "data_root": self.data_root, "epochs": self.epochs,
            # "epochs" stays the budget's number (the cap of an auto one), as every reader of
            # a run folder takes it; a folder from before "budget" is a fixed budget
            "budget": self.budget,
            **({"min_epochs": self.min_epochs, "plateau_patience": self.plateau_patience,
                "early_stopping": self.early_stopping}
               if self.budget == "auto" else {}),
            "seeds": list(self.seeds),
            **({"row_seeds": {k: list(v) for k, v in self.row_seeds.items()}}
               if self.row_seeds else {}),
            "metric": self.metric, "mode": self.mode, "scheduler": self.scheduler,
            "search": self.algorithm, "rows": [r.to_json() for r in self.rows],
            "table_metrics": list(self.table_metrics), "paper": self.paper,
            **({"samples": self.samples, "space": self.space}
               if self.algorithm == "optuna" else {}),
            "max_concurrent": self.max_concurrent, "evaluation": self.evaluation.to_dict(),
            "image_every": self.image_every, "checkpoint_every": self.checkpoint_every,
            "checkpoint_seconds": self.checkpoint_seconds, "precision": self.precision,
            "resources": self.resources.to_json(), "git": self.git, "argv": list(self.argv),
            **({"trackers": list(self.trackers)} if self.trackers else {}),
            "environment": self.environment}

    def save(self, out: Path) -> None:
        write_json_atomic(out / "search.json", self.to_json())

    @classmethod
    def from_json(cls, saved: dict, defaults: dict | None = None) -> "RunSpec":
        """search.json read back (to_json's inverse). A key that an older run did not write
        takes `defaults`' value under that key (e.g. the study's or the flags'), else the
        value every run had before the key existed. KeyError, TypeError or ValueError
        (e.g. a config field this version dropped) on a file it cannot build."""
        d = {**(defaults or {}), **saved}
        res = d.get("resources") or {}
        budget = d.get("budget", "fixed")
        return cls(
            name=d["name"], title=d.get("title", d["name"]), dataset=d["dataset"],
            data_root=d.get("data_root"), epochs=d["epochs"], seeds=tuple(d["seeds"]),
            budget=budget, min_epochs=d.get("min_epochs", 0),
            plateau_patience=d.get("plateau_patience", PATIENCE),
            early_stopping=bool(d.get("early_stopping", False)),
            metric=d.get("metric", "val/mse"), mode=d.get("mode", "min"),
            scheduler=d.get("scheduler", "fifo"), algorithm=d.get("search", "grid"),
            rows=tuple(RunRow(r["label"], models.Config.from_dict(r["config"]),
                              r.get("preset"), r.get("data") or None) for r in d["rows"]),
            table_metrics=tuple(d.get("table_metrics", ())), paper=d.get("paper"),
            samples=d.get("samples", 0), space=d.get("space"),
            max_concurrent=d.get("max_concurrent", 0),
            evaluation=EvalSettings.from_dict(d.get("evaluation")),
            image_every=d.get("image_every", 10),
            checkpoint_every=d.get("checkpoint_every", 1),  # before 5m: every epoch
            checkpoint_seconds=d.get("checkpoint_seconds", 0.0),
            precision=d.get("precision", DEFAULT_PRECISION),
            resources=Resources(res.get("cpu", 1.0), res.get("gpu", 0.0),
                                res.get("workers", 1)),
            git=d.get("git", "unknown"), argv=tuple(d.get("argv", ())),
            trackers=tuple(d.get("trackers", ())), environment=d.get("environment") or {},
            row_seeds={k: tuple(v) for k, v in (d.get("row_seeds") or {}).items()})

    def trial_space(self) -> dict:
        """What every trial's params hold besides its label, seed, config and data."""
        return {"label": None, "seed": None, "search": self.name, "dataset": self.dataset,
                "data_root": self.data_root, "epochs": self.epochs, "metric": self.metric,
                "mode": self.mode, "image_every": self.image_every,
                "checkpoint_every": self.checkpoint_every,
                "checkpoint_seconds": self.checkpoint_seconds, "precision": self.precision,
                "evaluation": self.evaluation.to_dict(), "resources": self.resources.to_json(),
                # an Optuna search's trials share a row and seed: each TensorBoard board adds
                # the trial's number (engine/eval/tensorboard.py board_dir)
                **({"sampled": True} if self.algorithm == "optuna" else {}),
                # only an auto budget's trials hold these (from_params reads their absence
                # as a fixed budget)
                **({"budget": "auto", "min_epochs": self.min_epochs,
                    "plateau_patience": self.plateau_patience,
                    **({"early_stopping": True} if self.early_stopping else {})}
                   if self.budget == "auto" else {})}


@dataclass(frozen=True)
class TrialSpec:
    """One trial, typed: what its params hold (Tune stores them as the trial's params.json;
    `params` keeps them as they came, for the checkpoint and TensorBoard's hyperparameters)."""
    label: str
    seed: int
    config: models.Config
    dataset: str
    data_root: str | None
    epochs: int
    metric: str
    mode: str
    image_every: int
    checkpoint_every: int
    checkpoint_seconds: float
    evaluation: EvalSettings
    resources: Resources
    data: dict | None
    precision: str
    search: str | None  # the search's name (None in the params of a run before it was kept)
    params: dict = field(compare=False, repr=False)
    budget: str = "fixed"  # "auto": `epochs` is the cap of a trial that ends at its plateau
    min_epochs: int = 0
    plateau_patience: int = PATIENCE
    early_stopping: bool = False  # "auto" only: RunSpec.early_stopping
    sampled: bool = False  # a trial of a sampled (Optuna) search: many share a row and seed

    @classmethod
    def from_params(cls, params: dict) -> "TrialSpec":
        """A trial's params (RunSpec.trial_space with its label, seed, config and data); the
        keys an older run did not write take their defaults. Bad evaluation settings or a
        bad config raise ValueError here, before anything trains."""
        res = params.get("resources") or {}
        return cls(
            label=params["label"], seed=params["seed"], config=models.resolve(params["config"]),
            dataset=params["dataset"], data_root=params.get("data_root"),
            epochs=params["epochs"], metric=params["metric"], mode=params["mode"],
            image_every=max(1, int(params.get("image_every", 10))),
            checkpoint_every=params.get("checkpoint_every", 1),  # before 5m: every epoch
            checkpoint_seconds=params.get("checkpoint_seconds", 0.0),
            evaluation=EvalSettings.from_dict(params.get("evaluation")),
            resources=Resources(res.get("cpu", 1.0), res.get("gpu", 0.0), res.get("workers", 1)),
            data=params.get("data"), precision=params.get("precision", DEFAULT_PRECISION),
            search=params.get("search"), params=params, sampled=bool(params.get("sampled")),
            budget=params.get("budget", "fixed"), min_epochs=params.get("min_epochs", 0),
            plateau_patience=params.get("plateau_patience", PATIENCE),
            early_stopping=bool(params.get("early_stopping", False)))

    def __post_init__(self):
        if self.budget not in ("fixed", "auto"):
            raise ValueError(f"budget {self.budget!r}: fixed or auto")
        if self.budget == "auto" and models.needs_total_epochs(self.config):
            raise ValueError(f"budget auto: lr_schedule={self.config.lr_schedule} anneals over "
                             "the total epochs, which a trial that ends at its plateau does "
                             "not know")
