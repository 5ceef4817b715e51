"""A search: rows of configurations x seeds on one data set for a budget, run by Ray Tune.

A search script declares a `Search` (a docstring, the rows, the seeds, the metric, the paper's
numbers) and calls `run(search)`, which gives it the engine's common flags:

    --dataset D --epochs N --seeds K --smoke --out DIR --resume --address ADDR
    --gpus-per-trial G --cpus-per-trial C --workers-per-trial W
    --scheduler fifo|asha --search grid|optuna --samples N --rows A,B --set FIELD=VALUE

Every row is resolved and built for the data set before anything starts; a bad one, or any
other bad input, is one line on stderr and exit code 2. Seeds are an explicit axis: every
(row, seed) is its own trial, and the report groups them.
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import models
from engine.data import DATASETS, load_dataset
from engine.files import write_json_atomic
from engine.train import _parse_overrides

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Search:
    """A study: `rows` maps a label (a table row) to a preset name, a Config, or a
    (preset, {field: value}) pair."""
    name: str
    title: str
    rows: dict
    seeds: int = 3
    dataset: str = "digits"
    epochs: int = 30
    metric: str = "val/mse"  # reported every epoch; ASHA and Optuna act on it
    mode: str = "min"
    table_metrics: tuple[str, ...] = ("test/mse", "test/psnr")
    paper: dict | None = None  # {"source", "setting", "numbers": {dataset: {label: {metric: v}}}}
    scheduler: str = "fifo"  # an ablation table wants every row at the full budget
    space: dict | None = None  # config field -> ray.tune domain, for --search optuna
    smoke: dict = field(default_factory=lambda: {"epochs": 2, "seeds": 1})


def grid(base: str | models.Config, **axes: list) -> dict:
    """Rows for the product of `axes` over a base preset, labelled "field=value, ...".

    grid("UAE", beta=[1e-4, 1e-3], kappa=[1e-3, 1.0]) -> four rows, e.g. "beta=0.0001 kappa=1.0"
    (space-separated, so that --rows can name them with commas)."""
    import itertools
    keys = list(axes)
    return {" ".join(f"{k}={v}" for k, v in zip(keys, values)):
            (base, dict(zip(keys, values))) for values in itertools.product(*axes.values())}


class BadInput(ValueError):
    """Input that must be refused before any trial starts (exit code 2)."""


def parse_args(search: Search, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=search.title)
    p.add_argument("--dataset", default=search.dataset, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--epochs", type=int, help=f"training epochs per trial ({search.epochs})")
    p.add_argument("--seeds", type=int, help=f"seeds 0..K-1 per row ({search.seeds})")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny budget for tests: {search.smoke}, unless given explicitly")
    p.add_argument("--out", help="the run folder (default runs/<search>-<dataset>-<n>)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run (the latest one, or --out)")
    p.add_argument("--address", help='a running Ray cluster, e.g. "auto"; default: start '
                   "Ray on this machine")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="per worker; fractions pack trials on one GPU, e.g. 0.25")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="per worker")
    p.add_argument("--workers-per-trial", type=int, default=1,
                   help="DDP workers per trial (a TorchTrainer inside the trial when > 1)")
    p.add_argument("--scheduler", choices=("fifo", "asha"), default=search.scheduler,
                   help=f"asha stops weak trials early on {search.metric}")
    p.add_argument("--search", choices=("grid", "optuna"), default="grid",
                   help="optuna samples the search's space instead of running its rows")
    p.add_argument("--samples", type=int, default=20, help="trials for --search optuna")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most this many trials at once (default: as resources allow)")
    p.add_argument("--rows", help="only these rows, comma-separated labels")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override a config field in every row, e.g. --set latent_dim=8")
    p.add_argument("--image-every", type=int, default=10,
                   help="epochs between TensorBoard image grids")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="epochs between checkpoints (and always the last)")
    args = p.parse_args(argv)
    budget = search.smoke if args.smoke else {}
    if args.epochs is None:
        args.epochs = budget.get("epochs", search.epochs)
    if args.seeds is None:
        args.seeds = budget.get("seeds", search.seeds)
    return args


def resolve_rows(search: Search, args, shape: tuple[int, ...]) -> dict[str, models.Config]:
    """Every row as a validated Config that builds for images of `shape` (else BadInput)."""
    try:
        overrides = _parse_overrides(args.set)
    except ValueError as e:
        raise BadInput(str(e)) from None
    labels = list(search.rows)
    if args.rows:
        wanted = [s.strip() for s in args.rows.split(",")]
        unknown = [w for w in wanted if w not in search.rows]
        if unknown:
            raise BadInput(f"--rows: unknown row {unknown[0]!r}; rows of {search.name}: "
                           f"{', '.join(labels)}")
        labels = wanted
    out = {}
    for label in labels:
        spec = search.rows[label]
        base, extra = spec if isinstance(spec, tuple) else (spec, {})
        try:
            cfg = models.resolve(base, **{**extra, **overrides})
            models.build(cfg, shape)  # e.g. an architecture that does not fit the data
        except (ValueError, TypeError) as e:
            raise BadInput(f"row {label!r}: {e}") from None
        if cfg.batch_size < 2 * args.workers_per_trial:
            raise BadInput(f"row {label!r}: batch_size {cfg.batch_size} gives fewer than 2 "
                           f"examples to each of {args.workers_per_trial} workers")
        out[label] = cfg
    return out


def check_args(search: Search, args) -> None:
    if args.dataset not in DATASETS:
        raise BadInput(f"--dataset {args.dataset!r} is unknown; known: {', '.join(DATASETS)}")
    for name, value, low in (("--epochs", args.epochs, 1), ("--seeds", args.seeds, 1),
                             ("--workers-per-trial", args.workers_per_trial, 1),
                             ("--samples", args.samples, 1), ("--image-every", args.image_every, 1),
                             ("--checkpoint-every", args.checkpoint_every, 1),
                             ("--max-concurrent", args.max_concurrent, 0)):
        if value < low:
            raise BadInput(f"{name} {value} must be >= {low}")
    if not (args.cpus_per_trial > 0 and math.isfinite(args.cpus_per_trial)):
        raise BadInput(f"--cpus-per-trial {args.cpus_per_trial} must be > 0")
    if not (args.gpus_per_trial >= 0 and math.isfinite(args.gpus_per_trial)):
        raise BadInput(f"--gpus-per-trial {args.gpus_per_trial} must be >= 0")
    if args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        raise BadInput(f"--gpus-per-trial {args.gpus_per_trial}: above 1 it must be whole")
    if args.workers_per_trial > 1 and 0 < args.gpus_per_trial < 1:
        raise BadInput(f"--gpus-per-trial {args.gpus_per_trial} with --workers-per-trial "
                       f"{args.workers_per_trial} would put two DDP ranks on one GPU, which NCCL "
                       "refuses; give each worker a whole GPU")
    if args.search == "optuna" and not search.space:
        raise BadInput(f"--search optuna: {search.name} declares no space to sample; it runs "
                       "its rows as a grid")
    if search.metric.split("/")[0] not in ("val", "train"):
        raise BadInput(f"metric {search.metric!r}: early stopping needs a per-epoch "
                       "val/ or train/ metric")


def run_folder(search: Search, args) -> Path:
    """--out, else runs/<search>-<dataset>-<n>: a new n, or with --resume the latest."""
    if args.out:
        out = Path(args.out).resolve()
    else:
        runs = ROOT / "runs"
        pattern = re.compile(rf"^{re.escape(search.name)}-{re.escape(args.dataset)}-(\d+)$")
        taken = sorted(int(m[1]) for p in (runs.iterdir() if runs.is_dir() else [])
                       if (m := pattern.match(p.name)))
        if args.resume and not taken:
            raise BadInput(f"--resume: no run of {search.name} on {args.dataset} in {runs}; "
                           "pass --out <run folder>")
        n = taken[-1] if args.resume else (taken[-1] + 1 if taken else 1)
        out = runs / f"{search.name}-{args.dataset}-{n}"
    if args.resume and not (out / "search.json").is_file():
        raise BadInput(f"--resume: {out} is not a run folder (no search.json)")
    if args.resume:
        import json
        saved = json.loads((out / "search.json").read_text())
        workers = saved.get("resources", {}).get("workers", 1)
        if workers != args.workers_per_trial:  # a different trainable cannot be restored
            raise BadInput(f"--resume: {out} ran with --workers-per-trial {workers}; pass the "
                           "same")
        from engine import ray_backend  # every Ray call lives there
        if not ray_backend.can_resume(str(out)):
            raise BadInput(f"--resume: Tune saved no state in {out} yet; start it again "
                           "without --resume into a new --out")
    if not args.resume and out.exists() and any(out.iterdir()):
        raise BadInput(f"--out {out} already holds a run; pass --resume to finish it or "
                       "choose another folder")
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (sha + ("+uncommitted" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _space_bounds(space: dict) -> list[dict]:
    """Config overrides at the corners of an Optuna space, to validate before starting."""
    from ray.tune.search.sample import Categorical
    points = [{}]
    for k, dom in space.items():
        values = dom.categories if isinstance(dom, Categorical) else [dom.lower, dom.upper]
        points = [{**p, k: v} for p in points for v in values][:64]
    return points


def run(search: Search, argv: list[str] | None = None, callbacks: tuple = ()) -> int:
    """Validate, run the search with Ray Tune, write and print the report. Exit code:
    0, 1 if a trial failed with an error (the others' results are kept), 2 on bad input.
    `callbacks` are extra ray.tune.Callback objects (e.g. a benchmark's timer)."""
    args = parse_args(search, argv)
    try:
        check_args(search, args)
        shape = load_dataset(args.dataset).image_shape
        rows = resolve_rows(search, args, shape)
        if args.search == "optuna":
            base_label = next(iter(rows))
            for point in _space_bounds(search.space):
                try:
                    models.build(rows[base_label].replace(**point), shape)
                except ValueError as e:
                    raise BadInput(f"space of {search.name}: {e}") from None
        out = run_folder(search, args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from engine import ray_backend  # imports Ray: only once the input is known to be good
    try:
        ray_backend.init(args.address)
    except Exception as e:  # noqa: BLE001  (ConnectionError, RuntimeError, ...)
        print(f"error: cannot reach Ray at --address {args.address}: {e}", file=sys.stderr)
        return 2
    have = ray_backend.cluster_resources()
    need_cpu = args.cpus_per_trial * args.workers_per_trial
    need_gpu = args.gpus_per_trial * args.workers_per_trial
    if need_gpu > have.get("GPU", 0) or need_cpu > have.get("CPU", 0):
        print(f"error: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU but the Ray cluster "
              f"has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; lower "
              "--cpus-per-trial / --gpus-per-trial / --workers-per-trial", file=sys.stderr)
        return 2

    seeds = list(range(args.seeds))
    if not args.resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "search.json", {
            "name": search.name, "title": search.title, "dataset": args.dataset,
            "epochs": args.epochs, "seeds": seeds, "metric": search.metric,
            "mode": search.mode, "scheduler": args.scheduler, "search": args.search,
            "rows": [{"label": k, "config": c.to_dict()} for k, c in rows.items()],
            "table_metrics": list(search.table_metrics), "paper": search.paper,
            "resources": {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial,
                          "workers": args.workers_per_trial},
            "git": git_commit(), "argv": sys.argv[1:] if argv is None else list(argv)})
    (out / "finished.json").unlink(missing_ok=True)

    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial,
                 "workers": args.workers_per_trial}
    space = {"label": None, "seed": None, "dataset": args.dataset, "epochs": args.epochs,
             "metric": search.metric, "mode": search.mode, "image_every": args.image_every,
             "checkpoint_every": args.checkpoint_every,
             "resources": resources}
    from ray import tune
    if args.search == "optuna":
        label = next(iter(rows))
        space.update(label=label, seed=seeds[0],
                     config={**rows[label].to_dict(), **search.space})
        num_samples = args.samples
    else:
        space.update(label=tune.grid_search(list(rows)), seed=tune.grid_search(seeds))
        num_samples = 1
    max_concurrent = args.max_concurrent
    if args.workers_per_trial > 1 and not max_concurrent:
        # Tune does not see the TorchTrainer's workers: start only as many trials as fit
        fits = [have.get("CPU", 0) // need_cpu] + ([have.get("GPU", 0) // need_gpu]
                                                    if need_gpu else [])
        max_concurrent = max(1, int(min(fits)))

    print(f"{search.title}: {len(rows)} rows x {len(seeds)} seeds on {args.dataset}, "
          f"{args.epochs} epochs, scheduler {args.scheduler} -> {out}", flush=True)
    rows_as_dicts = {k: c.to_dict() for k, c in rows.items()}
    complete = ray_backend.run_experiment(
        str(out), space, rows_as_dicts, workers=args.workers_per_trial,
        cpu=args.cpus_per_trial, gpu=args.gpus_per_trial, metric=search.metric,
        mode=search.mode, scheduler=args.scheduler, search_alg=args.search,
        num_samples=num_samples, epochs=args.epochs, max_concurrent=max_concurrent,
        resume=args.resume, callbacks=list(callbacks))
    if complete:
        write_json_atomic(out / "finished.json", {"finished": True})
    from engine.report import write_report
    text = write_report(out)
    print(text)
    print(f"TensorBoard: tensorboard --logdir {out}")
    if not complete:
        print(f"interrupted: finish it with --resume --out {out}", file=sys.stderr)
        return 130
    return 1 if "error" in _statuses(out) else 0


def _statuses(out: Path) -> set[str]:
    from engine.report import load_trials
    return set(load_trials(out)["status"])


__all__ = ["Search", "grid", "run", "BadInput"]
