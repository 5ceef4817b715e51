"""A search: rows of configurations x seeds on one data set for a budget, run by Ray Tune.

A search script declares a `Search` (a docstring, the rows, the seeds, the metric, the paper's
numbers) and calls `run(search)`, which gives it the engine's common flags:

    --dataset D --epochs N --seeds K --smoke --out DIR --storage DIR --resume --address ADDR
    --gpus-per-trial G --cpus-per-trial C --workers-per-trial W
    --scheduler fifo|asha --search grid|optuna --samples N --rows A,B --set FIELD=VALUE

Every row is resolved and built for the data set before anything starts; a bad one, or any
other bad input, is one line on stderr and exit code 2. Seeds are an explicit axis: every
(row, seed) is its own trial, and the report groups them.
"""
from __future__ import annotations

import errno
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import models
from engine.cli import BadInput, check_args, eval_settings, parse_args, parse_assignments
from engine.data import (EMBEDDED_DATASETS, DataError, check_data, check_options,
                         dataset_shape, embedded_arch, load_dataset)
from engine.evaluate import EvalSettings
from engine.files import write_json_atomic
from engine.folder import ROOT, claim_run_folder, release_run_folder, run_folder
from engine.resume import BEFORE_RESUME, _merge_results, _resume, _saved_settings


@dataclass
class Search:
    """A study: `rows` maps a label (a table row) to a preset name, a Config, a
    (preset, {field: value}) pair, or a (preset, {field: value}, data options) triple whose
    data options change the data the row trains and is evaluated on (engine/data.py,
    check_options: e.g. {"noise": {"partition": "spatial", "variance": 0.1}})."""
    name: str
    title: str
    rows: dict
    seeds: int = 3
    dataset: str = "mnist5k"  # the 5,000 real 28x28 digits; --smoke runs on SMOKE_DATASET
    epochs: int = 30
    metric: str = "val/mse"  # reported every epoch; ASHA and Optuna act on it
    mode: str = "min"
    table_metrics: tuple[str, ...] = ("test/mse", "test/psnr")
    paper: dict | None = None  # {"source", "setting", "numbers": {dataset: {label: {metric: v}}}}
    scheduler: str = "fifo"  # an ablation table wants every row at the full budget
    space: dict | None = None  # config field -> ray.tune domain, for --search optuna
    search: str = "grid"  # the default of --search: "optuna" samples `space` on the first row
    samples: int = 20  # the default of --samples (trials of --search optuna)
    # may give "samples" and "dataset" (else SMOKE_DATASET)
    smoke: dict = field(default_factory=lambda: {"epochs": 2, "seeds": 1})
    # what every trial is evaluated on at its end (engine/evaluate.py); --smoke shrinks the
    # sample counts to SMOKE_EVAL unless the flags give them
    evaluation: EvalSettings = field(default_factory=EvalSettings)




def grid(base: str | models.Config, **axes: list) -> dict:
    """Rows for the product of `axes` over a base preset, labelled "field=value, ...".

    grid("UAE", beta=[1e-4, 1e-3], kappa=[1e-3, 1.0]) -> four rows, e.g. "beta=0.0001 kappa=1.0"
    (space-separated, so that --rows can name them with commas)."""
    import itertools
    keys = list(axes)
    return {" ".join(f"{k}={v}" for k, v in zip(keys, values)):
            (base, dict(zip(keys, values))) for values in itertools.product(*axes.values())}






def resolve_rows(search: Search, args, shape: tuple[int, ...]) -> dict[str, models.Config]:
    """Every row as a validated Config that builds for images of `shape` (else BadInput)."""
    try:
        overrides = parse_assignments("--set", args.set, models.Config())
    except ValueError as e:
        raise BadInput(str(e)) from None
    labels = list(search.rows)
    if args.rows is not None:
        wanted = [s.strip() for s in args.rows.split(",") if s.strip()]
        if not wanted:
            raise BadInput(f"--rows {args.rows!r} names no row; give comma-separated labels "
                           f"(rows of {search.name}: {', '.join(labels)}) or leave it out for "
                           "every row")
        unknown = [w for w in wanted if w not in search.rows]
        if unknown:
            raise BadInput(f"--rows: unknown row {unknown[0]!r}; rows of {search.name}: "
                           f"{', '.join(labels)}")
        labels = wanted
    out = {}
    for label in labels:
        base, extra, _ = _row_spec(search.rows[label])
        try:
            cfg = embedded_arch(models.resolve(base, **{**extra, **overrides}), args.dataset)
            models.build(cfg, shape)  # e.g. an architecture that does not fit the data
        except (ValueError, TypeError) as e:
            raise BadInput(f"row {label!r}: {e}") from None
        except (RuntimeError, MemoryError) as e:  # e.g. --set hidden=300000
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise BadInput(f"row {label!r}: the model cannot be built on this machine "
                           f"({first[:200]}); make it smaller (hidden, latent_dim, arch)"
                           ) from None
        if cfg.batch_size < 2 * args.workers_per_trial:
            raise BadInput(f"row {label!r}: batch_size {cfg.batch_size} gives fewer than 2 "
                           f"examples to each of {args.workers_per_trial} workers")
        out[label] = cfg
    return out


def _row_spec(spec) -> tuple:
    """(preset or Config, {field: value}, data options or None) of a row of Search.rows."""
    if not isinstance(spec, tuple):
        return spec, {}, None
    return (*spec, None) if len(spec) == 2 else spec


def row_data(search: Search, labels, dataset: str) -> dict[str, dict]:
    """label -> data options of the rows that have any, each checked for `dataset`
    (BadInput, one line, on a bad one)."""
    out = {}
    for label in labels:
        options = _row_spec(search.rows[label])[2]
        try:
            check_options(options, dataset)
        except ValueError as e:
            raise BadInput(f"row {label!r}: {e}") from None
        if options:
            out[label] = options
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


def run(search: Search, argv: list[str] | None = None, callbacks: tuple = (),
        after=None) -> int:
    """Validate, run the search with Ray Tune, write and print the report. Exit code:
    0, 1 if a trial failed with an error (the others' results are kept), 2 on bad input,
    130 when interrupted (Ctrl-C: --resume finishes it). `callbacks` are extra
    ray.tune.Callback objects (e.g. a benchmark's timer). `after(run folder)`, if given, runs
    once the report is written (a study's own plots into <run>/report/); if it raises, the
    error is one line on stderr and the exit code 1."""
    args = parse_args(search, argv)
    try:
        check_args(search, args)
        evaluation = eval_settings(search, args)
        out = run_folder(search, args)
        space_json = None
        if args.resume:  # the run's own rows, data set, budget and evaluation
            rows, data_options, evaluation = _saved_settings(out, args)
            _check_files(args)
        else:
            _check_files(args)
            shape = dataset_shape(args.dataset)
            rows = resolve_rows(search, args, shape)
            data_options = row_data(search, rows, args.dataset)
            if args.search == "optuna":
                space_json = _check_space(search, rows, shape)
            evaluation = _resolve_features(evaluation, args.dataset, shape)
            out = claim_run_folder(search, args, out)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from engine import ray_backend  # imports Ray: only once the input is known to be good
    code = _connect(args, ray_backend, None if args.resume else lambda: release_run_folder(out))
    if code is not None:
        if not args.resume:
            release_run_folder(out)
        return code
    seeds = list(range(args.seeds)) if not args.resume else args.saved_seeds
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial,
                 "workers": args.workers_per_trial}  # per worker; saved, and in every trial
    if not args.resume:
        write_json_atomic(out / "search.json", {
            "name": search.name, "title": search.title, "dataset": args.dataset,
            "data_root": args.data_root,
            "epochs": args.epochs, "seeds": seeds, "metric": search.metric,
            "mode": search.mode, "scheduler": args.scheduler, "search": args.search,
            "rows": [{"label": k, "config": c.to_dict(),
                      # the preset a row names by itself, when it is not the label: the
                      # report says which rows run a preset of another name
                      **({"preset": spec} if isinstance(spec := search.rows.get(k), str)
                         and spec != k else {}),
                      **({"data": data_options[k]} if k in data_options else {})}
                     for k, c in rows.items()],
            "table_metrics": list(search.table_metrics), "paper": search.paper,
            # the sampled space as Optuna distributions (JSON), for the report's importances
            **({"samples": args.samples, "space": space_json}
               if args.search == "optuna" else {}),
            "max_concurrent": args.max_concurrent,
            "evaluation": evaluation.to_dict(), "image_every": args.image_every,
            "checkpoint_every": args.checkpoint_every,
            "resources": resources,
            "git": git_commit(), "argv": sys.argv[1:] if argv is None else list(argv)})
    (out / "finished.json").unlink(missing_ok=True)

    space = {"label": None, "seed": None, "dataset": args.dataset,
             "data_root": args.data_root, "epochs": args.epochs,
             "metric": search.metric, "mode": search.mode, "image_every": args.image_every,
             "checkpoint_every": args.checkpoint_every, "evaluation": evaluation.to_dict(),
             "resources": resources}
    from ray import tune
    if args.search == "optuna":
        label = next(iter(rows))
        space.update(label=label, seed=seeds[0],
                     config={**rows[label].to_dict(), **search.space})
    else:
        space.update(label=tune.grid_search(list(rows)), seed=tune.grid_search(seeds))
    max_concurrent = args.max_concurrent
    if args.workers_per_trial > 1 and not max_concurrent:
        # Tune does not see the TorchTrainer's workers: start only as many trials as fit
        have = ray_backend.cluster_resources()
        fits = [have.get("CPU", 0) // (args.cpus_per_trial * args.workers_per_trial)]
        if args.gpus_per_trial:
            fits.append(have.get("GPU", 0) // (args.gpus_per_trial * args.workers_per_trial))
        max_concurrent = max(1, int(min(fits)))

    print(f"{search.title}: {len(rows)} rows x {len(seeds)} seeds on {args.dataset}, "
          f"{args.epochs} epochs, scheduler {args.scheduler} -> {out}", flush=True)
    rows_as_dicts = {k: c.to_dict() for k, c in rows.items()}

    def experiment(**kw) -> str:  # this run's Tune experiment; kw: what differs per call
        return ray_backend.run_experiment(
            str(out), space, rows_as_dicts, workers=args.workers_per_trial,
            cpu=args.cpus_per_trial, gpu=args.gpus_per_trial, metric=search.metric,
            mode=search.mode, scheduler=args.scheduler, epochs=args.epochs,
            max_concurrent=max_concurrent, callbacks=list(callbacks), data=data_options,
            **kw)
    try:
        if args.resume:
            outcome = _resume(out, args, rows, seeds, search.metric, experiment)
        else:
            outcome = experiment(search_alg=args.search, num_samples=(
                args.samples if args.search == "optuna" else 1))
        for kept in out.glob(f"*/{BEFORE_RESUME}"):  # from a resume whose driver was killed
            _merge_results(kept.parent)
    except OSError as e:  # the driver's own writes (merge, search.json) on a full disk
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        outcome = "disk full"
    if outcome == "disk full":
        print(f"error: the disk of {out} is full: the search stopped; free space, then "
              f"--resume --out {out} continues it", file=sys.stderr)
        return 1
    if outcome == "complete":
        write_json_atomic(out / "finished.json", {"finished": True})
    from engine.report import write_report
    text = write_report(out)
    print(text)
    print(f"TensorBoard: tensorboard --logdir {out}")
    failed = False
    if after is not None and outcome == "complete":
        try:
            after(out)
        except Exception as e:  # noqa: BLE001  (the trials' results are written already)
            print(f"error: the study's own report step failed: {type(e).__name__}: {e}",
                  file=sys.stderr)
            failed = True
    if outcome != "complete":
        print(f"interrupted: the unfinished trials keep their checkpoints; finish the run "
              f"with --resume --out {out}", file=sys.stderr)
        return 130
    return 1 if failed or "error" in _statuses(out) else 0


def _check_space(search: Search, rows: dict, shape) -> dict:
    """The Optuna space as JSON distributions, after building the first row at its corners
    (BadInput where Optuna cannot sample it or a corner does not build)."""
    try:
        from engine.ray_backend import describe_space
        space_json = describe_space(search.space)
    except Exception as e:  # noqa: BLE001  (ValueError, AttributeError, ...)
        raise BadInput(f"space of {search.name}: Optuna cannot sample it ({e}); "
                       "use tune.uniform / loguniform / randint / choice") from None
    base_label = next(iter(rows))
    for point in _space_bounds(search.space):
        try:
            models.build(rows[base_label].replace(**point), shape)
        except ValueError as e:
            raise BadInput(f"space of {search.name}: {e}") from None
    return space_json


def _resolve_features(evaluation: EvalSettings, dataset: str, shape) -> EvalSettings:
    """FID's feature space decided here, once, so that no node's trial picks another; and
    refused before any trial where it cannot serve, or where --fid-samples is too few for a
    full-rank covariance of its features (the FIDs would only be "not computed" at the end)."""
    if "fid" not in evaluation.metrics:
        return evaluation
    from engine.metrics.features import CLASSIFIER_DIM, INCEPTION_MIN_SIZE, resolve_auto
    from engine.metrics.pretrained import WeightsMissing, inception_weights_path
    if evaluation.features == "auto":
        n_ref = (len(getattr(load_dataset(dataset), evaluation.reference_split).images)
                 if dataset in EMBEDDED_DATASETS else None)
        evaluation = evaluation.replace(features=resolve_auto(
            shape, n_ref, evaluation.inception_weights))
    dim = CLASSIFIER_DIM
    if evaluation.features == "inception":
        dim = 2048  # pool3
        if min(shape[1:]) < INCEPTION_MIN_SIZE:
            raise BadInput(f"--features inception: {dataset}'s {shape[1]}x{shape[2]} images "
                           f"are below the {INCEPTION_MIN_SIZE} px Inception is used at; use "
                           "--features classifier (or auto)")
        try:
            inception_weights_path(evaluation.inception_weights)
        except WeightsMissing as e:
            raise BadInput(f"--features inception: {str(e).splitlines()[0]}") from None
    if evaluation.fid_samples <= dim:
        raise BadInput(f"--fid-samples {evaluation.fid_samples}: a FID in the "
                       f"{evaluation.features} features ({dim} dimensions) needs more samples "
                       f"than dimensions; give at least {dim + 1}")
    return evaluation


def _connect(args, ray_backend, give_up=None) -> int | None:
    """Start or join Ray and check that a trial fits it; None when it does, else the exit
    code after one line on stderr (`give_up()` is called first where the join times out and
    the process ends at once)."""
    try:
        ray_backend.init(args.address, give_up)
    except Exception as e:  # noqa: BLE001  (ConnectionError, AuthenticationError, ...)
        causes = " ".join(str(c) for c in (e, e.__cause__) if c)
        hint = ("; the cluster uses token authentication: put its token (ray get-auth-token on "
                "the head) in ~/.ray/auth_token or $RAY_AUTH_TOKEN and set RAY_AUTH_MODE=token"
                if "token" in causes.lower() else
                "; check that the address is the head node's (ray status there prints it)")
        first = (str(e).splitlines() or [type(e).__name__])[0]
        print(f"error: cannot join Ray at --address {args.address}: {first}{hint}",
              file=sys.stderr)
        return 2
    have = ray_backend.cluster_resources()
    need_cpu = args.cpus_per_trial * args.workers_per_trial
    need_gpu = args.gpus_per_trial * args.workers_per_trial
    if need_gpu > have.get("GPU", 0) or need_cpu > have.get("CPU", 0):
        # A cluster joined by --address may autoscale (cluster.yaml's starts with no GPU
        # worker): there the trials wait for nodes, unless Ray knows the cluster's limits
        # and a trial exceeds them. This machine alone never grows.
        most = ray_backend.max_cluster_resources() if args.address else None
        if args.address and (most is None or (need_gpu <= most.get("GPU", 0)
                                              and need_cpu <= most.get("CPU", 0))):
            print(f"note: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU; the Ray cluster "
                  f"has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU now, so the "
                  "trials wait until its autoscaler adds nodes"
                  + ("" if most else " (Ray does not tell this driver how far the cluster can "
                     "grow: if no node type can hold a trial's worker, nothing starts; stop "
                     "it with Ctrl-C)"), flush=True)
        else:
            print(f"error: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU but the Ray "
                  f"cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
                  f"{' at most' if most else ''}; lower --cpus-per-trial / --gpus-per-trial / "
                  "--workers-per-trial", file=sys.stderr)
            return 2
    return None








def _check_files(args) -> None:
    """The data set's files are there (or downloaded) before any trial starts. The root is
    kept as given (made absolute), None when not given, so that each node of a cluster finds
    its own $VAE_DATA_ROOT; this checks the driver's machine only."""
    if args.data_root:
        args.data_root = str(Path(args.data_root).expanduser().resolve())
    try:
        check_data(args.dataset, args.data_root)
    except (DataError, OSError) as e:  # OSError: e.g. a cache folder that cannot be locked
        raise BadInput(str(e).splitlines()[0] if str(e) else repr(e)) from None














def _statuses(out: Path) -> set[str]:
    from engine.report import load_trials
    return set(load_trials(out)["status"])


__all__ = ["Search", "grid", "run", "BadInput"]
