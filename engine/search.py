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

import argparse
import contextlib
import errno
import json
import math
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import models
from engine.data import (DATASETS, EMBEDDED_DATASETS, DataError, check_data, check_options,
                         dataset_shape, embedded_arch, load_dataset)
from engine.evaluate import GROUPS, EvalSettings, parse_groups
from engine.files import STOPPED_FILE, write_json_atomic, write_text_atomic
from engine.train import parse_assignments

ROOT = Path(__file__).resolve().parent.parent
STORAGE_ENV = "VAE_ABLATIONS_STORAGE"  # the default --storage, e.g. set on every cluster node


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


# --smoke's data set where --dataset is not given: the 8x8 digits train in a fraction of the
# time of any other set, which is what the tests' smoke runs need.
SMOKE_DATASET = "digits"
# Sample counts of --smoke: enough for a full-rank covariance of 64-d classifier features;
# and the densities it leaves out.
SMOKE_EVAL = {"fid_samples": 300, "ppl_samples": 200, "iwae_k": 20, "nll_images": 100,
              "diagnostic_images": 200, "grad_var_draws": 4}
SMOKE_SKIPS = ("gmm100", "second_stage")


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
    smoke_dataset = search.smoke.get("dataset", SMOKE_DATASET)
    p = argparse.ArgumentParser(description=search.title)
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default "
                   f"{search.dataset}; with --smoke {smoke_dataset})")
    p.add_argument("--data-root", help="where the real data sets' files are (default "
                   "$VAE_DATA_ROOT, else ~/data); downloaded there if missing and possible")
    p.add_argument("--epochs", type=int, help=f"training epochs per trial ({search.epochs})")
    p.add_argument("--seeds", type=int, help=f"seeds 0..K-1 per row ({search.seeds})")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny budget for tests: {search.smoke}, unless given explicitly; "
                   f"the evaluation with {SMOKE_EVAL} and without {', '.join(SMOKE_SKIPS)}")
    p.add_argument("--out", help="the run folder (default <storage>/<search>-<dataset>-<n>)")
    p.add_argument("--storage", metavar="DIR",
                   help=f"the folder of run folders (default ${STORAGE_ENV}, else runs/ in the "
                   "project); on a cluster, a shared file system that every node mounts at this "
                   "path (NFS, EFS, ...)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run (the latest one, or --out)")
    p.add_argument("--address", help='a running Ray cluster: its head node\'s HOST:PORT '
                   '(6379 by default), or "auto" on one of its nodes; default: start Ray on this '
                   "machine")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="per worker; fractions pack trials on one GPU, e.g. 0.25")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="per worker")
    p.add_argument("--workers-per-trial", type=int, default=1,
                   help="DDP workers per trial (a TorchTrainer inside the trial when > 1)")
    p.add_argument("--scheduler", choices=("fifo", "asha"), default=search.scheduler,
                   help=f"asha stops weak trials early on {search.metric}")
    p.add_argument("--search", choices=("grid", "optuna"), default=search.search,
                   help="optuna samples the search's space instead of running its rows "
                   f"({search.search})")
    p.add_argument("--samples", type=int,
                   help=f"trials for --search optuna ({search.samples})")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most this many trials at once (default: as resources allow)")
    p.add_argument("--rows", help="only these rows, comma-separated labels")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override a config field in every row, e.g. --set latent_dim=8")
    p.add_argument("--image-every", type=int, default=10,
                   help="epochs between TensorBoard image grids")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="epochs between checkpoints (and always the last)")
    p.add_argument("--eval", help=f"metric groups evaluated at the end, comma-separated: "
                   f"{', '.join(GROUPS)}, all or none (default: "
                   f"{','.join(search.evaluation.metrics) or 'none'})")
    p.add_argument("--fid-samples", type=int,
                   help=f"generated images per FID ({search.evaluation.fid_samples})")
    p.add_argument("--features", choices=("auto", "inception", "classifier"),
                   help="FID's feature space (default auto: Inception where its weights are "
                   "and the images are >= 28 px, else the data set's own classifier)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the "
                   "torch hub cache)")
    p.add_argument("--eval-set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="any other evaluation setting, e.g. --eval-set iwae_k=100 "
                   "densities=prior,gmm10 (see engine/evaluate.py EvalSettings)")
    args = p.parse_args(argv)
    args.storage_from = "--storage"  # named in its errors
    if args.storage is None and os.environ.get(STORAGE_ENV):
        args.storage, args.storage_from = os.environ[STORAGE_ENV], f"${STORAGE_ENV}"
    budget = search.smoke if args.smoke else {}
    if args.dataset is None:
        args.dataset = smoke_dataset if args.smoke else search.dataset
    if args.epochs is None:
        args.epochs = budget.get("epochs", search.epochs)
    if args.seeds is None:
        args.seeds = budget.get("seeds", search.seeds)
    if args.samples is None:
        args.samples = budget.get("samples", search.samples)
    return args


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


def eval_settings(search: Search, args) -> EvalSettings:
    """The search's EvalSettings with --smoke's sample counts and the flags applied
    (BadInput on an unknown or bad setting)."""
    changes: dict = dict(SMOKE_EVAL) if args.smoke else {}
    if args.smoke:  # fitting GMM-100 and training the second stage take longest
        changes["densities"] = tuple(d for d in search.evaluation.densities
                                     if d not in SMOKE_SKIPS) or ("prior",)
    try:
        changes.update(parse_assignments("--eval-set", args.eval_set, EvalSettings()))
    except ValueError as e:
        raise BadInput(str(e)) from None
    if args.eval is not None:
        changes["metrics"] = parse_groups(args.eval)
    for flag in ("fid_samples", "features", "inception_weights"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    try:
        settings = search.evaluation.replace(**changes)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if settings.inception_weights and not Path(settings.inception_weights).is_file():
        raise BadInput(f"--inception-weights {settings.inception_weights}: no such file")
    return settings


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
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise BadInput(f"--data-root {args.data_root}: no such folder; give the folder that "
                       f"holds the data sets' folders (e.g. <root>/{args.dataset}), or create "
                       "it for a download")
    if search.metric.split("/")[0] not in ("val", "train"):
        raise BadInput(f"metric {search.metric!r}: early stopping needs a per-epoch "
                       "val/ or train/ metric")
    if args.out and args.storage and args.storage_from == "--storage":
        raise BadInput("--out and --storage: give one (--out is the run folder itself, "
                       "--storage the folder in which each run gets its own)")
    if args.out and "://" in args.out:
        check_storage(args.out, "--out")
    if args.storage and not args.out:  # (--out wins over $VAE_ABLATIONS_STORAGE)
        args.storage = str(check_storage(args.storage, args.storage_from))
    check_address(args.address)


def check_storage(value: str, name: str) -> Path:
    """A folder for run folders that exists, or whose parent does, and is writable (else
    BadInput naming `name`, the flag or variable it came from)."""
    if "://" in value:
        # Tune could write trials to a bucket through pyarrow, but the driver writes
        # search.json, the reports and the merged results, and the trials their TensorBoard
        # events, with plain file calls
        raise BadInput(f"{name} {value}: bucket URIs are not supported; mount the bucket as a "
                       "file system on every node or use a shared file system (NFS, EFS) "
                       f"path, e.g. {name} /mnt/shared/runs")
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise BadInput(f"{name} {value}: {path} is a file, not a folder")
    if not path.exists() and not path.parent.is_dir():
        raise BadInput(f"{name} {value}: its parent folder {path.parent} does not exist; create "
                       "it (on a cluster: mount the shared file system there on every node)")
    existing = path if path.exists() else path.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"{name} {value}: {existing} is not writable by this user")
    return path


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """The cluster's head answers at `address` before Ray is asked to join it: ray.init keeps
    retrying an address where nothing listens (still retrying after 60 s when measured), and
    Ray Client (ray://) would leave the run folder on this machine, not on the cluster."""
    if not address or address == "auto":  # "auto" fails at once when there is no cluster
        return
    if "://" in address:
        raise BadInput(f"--address {address}: give the head node's HOST:PORT (6379 by "
                       "default), not a URI; Ray Client (ray://) is not supported: run the "
                       "search on the cluster with ray job submit or ray exec")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [IPv6]:port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--address {address}: expected the head node's HOST:PORT, e.g. "
                       "10.0.0.5:6379, or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
            answer = _grpc_probe(conn, timeout_s)
    except OSError as e:
        raise BadInput(f"--address {address}: nothing answers at {host}:{port} "
                       f"({e.strerror or e}); start the cluster (ray up cluster.yaml, or ray "
                       "start --head on its head node) and pass the head's address, or leave "
                       "--address out to run on this machine") from None
    if answer is not None:
        raise BadInput(f"--address {address}: what answers there is not Ray's GCS ({answer}); "
                       "give the head's GCS port (6379 by default; the dashboard and job API "
                       "are 8265, Ray Client 10001)")


def _grpc_probe(conn: socket.socket, timeout_s: float) -> str | None:
    """None where the server at `conn` speaks HTTP/2, as Ray's GCS (gRPC) does; else what it
    said instead. ray.init waits for minutes on a port where something else answers (e.g.
    the dashboard's 8265 through a tunnel). A TLS cluster (RAY_USE_TLS) is not probed."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    # the HTTP/2 client preface and an empty SETTINGS frame; a server answers with its own
    # SETTINGS frame (9-byte header, type 0x4)
    conn.settimeout(timeout_s)
    try:
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = conn.recv(64)
    except socket.timeout:
        return f"no HTTP/2 answer within {timeout_s:g} s"
    except OSError as e:
        return f"the connection was dropped ({e.strerror or e})"
    if len(head) >= 9 and head[3] == 4:
        return None
    if head.startswith(b"HTTP/"):
        return f"an HTTP/1 server: {head.splitlines()[0].decode(errors='replace')!r}"
    if head and all(32 <= b < 127 or b in b"\r\n\t" for b in head):
        first = head.decode().splitlines()[0] if head.strip() else ""
        return f"a text answer, e.g. an HTTP/1 server: {first[:40]!r}"
    return ("it closed the connection without a word" if not head
            else f"an unknown protocol: {head[:16]!r}")


def run_folder(search: Search, args) -> Path:
    """--out, else <storage>/<search>-<dataset>-<n>: with --resume the latest n (checked to be
    a run folder); else the path a new run will claim (claim_run_folder)."""
    if args.out:
        out = Path(args.out).expanduser().resolve()
        if not args.resume:
            check_storage(str(out), "--out")  # its parent exists, it is writable
    else:
        runs = Path(args.storage) if args.storage else ROOT / "runs"
        taken = _taken(runs, search.name, args.dataset)
        if args.resume and not taken:
            raise BadInput(f"--resume: no run of {search.name} on {args.dataset} in {runs}; "
                           "pass --out <run folder>")
        n = taken[-1] if args.resume else (taken[-1] + 1 if taken else 1)
        out = runs / f"{search.name}-{args.dataset}-{n}"
    if args.resume:
        if not (out / "search.json").is_file():
            raise BadInput(f"--resume: {out} is not a run folder (no search.json)")
        saved = _read_search_json(out)
        workers = saved.get("resources", {}).get("workers", 1)
        if workers != args.workers_per_trial:  # a different trainable cannot continue it
            raise BadInput(f"--resume: {out} ran with --workers-per-trial {workers}; pass the "
                           "same")
    elif out.exists() and any(out.iterdir()):
        raise BadInput(f"--out {out} already holds a run; pass --resume to finish it or "
                       "choose another folder")
    return out


def _taken(runs: Path, name: str, dataset: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(name)}-{re.escape(dataset)}-(\d+)$")
    return sorted(int(m[1]) for p in (runs.iterdir() if runs.is_dir() else [])
                  if (m := pattern.match(p.name)))


CLAIM = {"claimed": True}  # search.json until the search writes its own (one Ray started)


def claim_run_folder(search: Search, args, out: Path) -> Path:
    """Take the new run's folder atomically, so that two searches started at once never share
    one: a numbered folder is made with mkdir (never exist_ok), the next number if another
    search made it first; then search.json is created exclusively (O_EXCL), which also decides
    between two searches given the same --out. BadInput on a folder that cannot be written
    (read-only or full file system, no permission)."""
    try:
        if args.out:
            out.mkdir(exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    out.mkdir()
                    break
                except FileExistsError:
                    n = int(out.name.rsplit("-", 1)[1]) + 1
                    out = out.parent / f"{search.name}-{args.dataset}-{n}"
        fd = os.open(out / "search.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump(CLAIM, f)
    except FileExistsError:
        raise BadInput(f"--out {out}: another search took this folder just now; choose "
                       "another") from None
    except OSError as e:  # EROFS, ENOSPC, EACCES, ...
        raise BadInput(f"{'--out' if args.out else 'the run folder'} {out}: cannot be "
                       f"written ({e.strerror or e}); free space or choose a writable "
                       "folder (--out, --storage)") from None
    return out


def release_run_folder(out: Path) -> None:
    """Give back a claimed folder that no search ran in (Ray did not start, ...)."""
    try:
        if json.loads((out / "search.json").read_text()) == CLAIM:
            (out / "search.json").unlink()
            out.rmdir()
    except (OSError, ValueError):
        pass


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


def _resume(out: Path, args, rows: dict, seeds: list[int], metric: str, experiment) -> str:
    """Finish an interrupted run from its own files only: every trial of the grid that is
    missing, unfinished or errored continues from the newest checkpoint in its folder (loaded
    weights_only); a sampled run's unfinished trials likewise, then the samples it still owes,
    drawn by a searcher told the finished trials. Tune's own saved state (pickles, which would
    run their writer's code) is never read. Returns "complete" or "interrupted"."""
    if args.search == "grid":
        todo = _trials_to_repair(out, rows, seeds)
        owed = 0
    else:
        todo, told, owed = _sampled_to_continue(out, args.samples, metric)
    print(f"resume: {len(todo)} trial(s) to finish"
          + (f", {owed} more to sample" if owed else "")
          + (": " + ", ".join(f"{label} seed {seed}" for label, seed, *_ in todo)
             if todo and args.search == "grid" else ""), flush=True)
    outcome = "complete"
    if todo:
        folders = [out / p[2] for p in todo if p[2]]
        for folder in folders:
            if (folder / "error.txt").exists():
                (folder / "error.txt").replace(folder / "error-before-resume.txt")
            (folder / STOPPED_FILE).unlink(missing_ok=True)
            # Tune rewrites result.json with the new epochs: the earlier lines wait on disk
            # (a driver killed during the resume loses nothing; the next resume merges them)
            if (folder / "result.json").exists() and not (folder / BEFORE_RESUME).exists():
                (folder / "result.json").replace(folder / BEFORE_RESUME)
        try:
            outcome = experiment(search_alg="grid", num_samples=1, pairs=todo)
        finally:
            for folder in folders:
                with contextlib.suppress(OSError):  # a full disk: the next resume merges
                    _merge_results(folder)
    if owed and outcome == "complete":
        _, told, owed = _sampled_to_continue(out, args.samples, metric)
        outcome = experiment(search_alg=args.search, num_samples=owed, told=told)
    return outcome


def _sampled_to_continue(out: Path, samples: int, metric: str):
    """A sampled run's unfinished trials as [label, seed, folder, their sampled config], the
    finished ones' ({"config/<field>": value}, last value of `metric`) for the searcher, and
    how many samples are still owed."""
    from engine.report import load_trials
    trials = load_trials(out)
    todo, told = [], []
    for _, t in trials.iterrows():
        params = json.loads((out / t["trial"] / "params.json").read_text())
        if t["status"] in ("completed", "diverged", "stopped early"):
            value = t.get(metric)
            told.append(({f"config/{k}": v for k, v in params["config"].items()},
                         None if value is None or not math.isfinite(value) else float(value)))
        else:
            todo.append([params["label"], params["seed"], t["trial"], params["config"]])
    return todo, told, max(0, samples - len(trials))


BEFORE_RESUME = "result-before-resume.json"


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


def _saved_settings(out: Path, args) -> tuple[dict, dict, EvalSettings]:
    """A resumed run's own rows, seeds, data set, budget and evaluation, from search.json:
    the trials a resume continues or repairs are the run's, whatever the flags say now."""
    saved = _read_search_json(out)
    try:
        rows = {r["label"]: models.Config.from_dict(r["config"]) for r in saved["rows"]}
    except (KeyError, TypeError, ValueError) as e:  # e.g. a field this version dropped
        raise BadInput(f"--resume: {out / 'search.json'} holds a row this version cannot "
                       f"build ({e}); finish it with the commit it names") from None
    data_options = {r["label"]: r["data"] for r in saved["rows"] if r.get("data")}
    args.dataset, args.epochs, args.saved_seeds = (saved["dataset"], saved["epochs"],
                                                   list(saved["seeds"]))
    args.image_every = saved.get("image_every", args.image_every)
    args.data_root = args.data_root or saved.get("data_root")  # the data may have moved
    args.checkpoint_every = saved.get("checkpoint_every", args.checkpoint_every)
    # how the trials were sampled, scheduled and sized: a resume that mixed today's flags in
    # would repair a sampled run as a grid, or restore trials with other resources
    args.search = saved.get("search", args.search)
    args.scheduler = saved.get("scheduler", args.scheduler)
    args.samples = saved.get("samples", args.samples)
    args.max_concurrent = saved.get("max_concurrent", args.max_concurrent)
    res = saved.get("resources", {})
    args.cpus_per_trial = res.get("cpu", args.cpus_per_trial)
    args.gpus_per_trial = res.get("gpu", args.gpus_per_trial)
    evaluation = EvalSettings.from_dict(saved.get("evaluation"))
    print(f"resume: with the run's own settings (search.json): {len(rows)} rows x "
          f"{len(args.saved_seeds)} seeds on {args.dataset}, {args.epochs} epochs, "
          f"--search {args.search}, --scheduler {args.scheduler}, evaluation "
          f"{','.join(evaluation.metrics) or 'none'}; flags given now other than --address "
          "and --data-root are ignored", flush=True)
    return rows, data_options, evaluation


def _read_search_json(out: Path) -> dict:
    """A run folder's search.json, or BadInput (one line) if it does not parse or has not
    the shape a search writes (an object with a data set, epochs, seeds and rows)."""
    path = out / "search.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"--resume: {path} is unreadable ({e}); it is written "
                       "atomically, so it was changed by hand: restore it") from None
    if saved == CLAIM:
        raise BadInput(f"--resume: {path} was claimed by a search that never started (Ray "
                       "did not start, or its driver died at once); start a new run")
    problem = _search_json_problem(saved)
    if problem:
        raise BadInput(f"--resume: {path} is not a search's record ({problem}); it was "
                       "changed by hand: restore it")
    return saved


def _search_json_problem(saved) -> str | None:
    """What is wrong with the shape of a search.json, or None."""
    if not isinstance(saved, dict):
        return f"a JSON {type(saved).__name__}, not an object"
    for key, kind in (("dataset", str), ("epochs", int), ("seeds", list), ("rows", list)):
        if not isinstance(saved.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if not saved["rows"]:
        return "'rows' is empty"
    if not all(isinstance(r, dict) and isinstance(r.get("label"), str)
               and isinstance(r.get("config"), dict) for r in saved["rows"]):
        return "a row is not {\"label\": ..., \"config\": {...}}"
    if not saved["seeds"] or not all(isinstance(x, int) for x in saved["seeds"]):
        return "'seeds' is not a list of integers"
    if not isinstance(saved.get("resources", {}), dict):
        return "'resources' is not an object"
    return None


def _trials_to_repair(out: Path, rows: dict, seeds: list[int]
                      ) -> list[list]:
    """[label, seed, trial folder or None, None] of the grid's trials a resume must finish:
    those without a folder, and those neither completed, diverged nor stopped by the
    scheduler (unfinished or errored), each from its folder with the most epochs. A (row,
    seed) with any ended folder is left alone."""
    from engine.report import load_trials
    trials = load_trials(out)
    repair = []
    for label in rows:
        for seed in seeds:
            mine = trials[(trials["label"] == label) & (trials["seed"] == seed)]
            if mine["status"].isin(["completed", "diverged", "stopped early"]).any():
                continue
            if mine.empty:
                repair.append([label, seed, None, None])
                continue
            best = mine.sort_values("epochs_done", ascending=False)
            repair.append([label, seed, best["trial"].iloc[0], None])
    return repair


def _merge_results(folder: Path) -> None:
    """Put a continued trial's earlier result lines (kept in BEFORE_RESUME) before its new
    ones (those before its first new epoch), each epoch once (a retried trial's later line
    wins; unreadable lines, from a driver killed mid-write, are dropped), and write its
    progress.csv again from them, with the columns of its header."""
    def read(path: Path) -> list[dict]:
        lines = []
        for text in (path.read_text().splitlines() if path.exists() else []):
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
        return lines
    old_path, new_path = folder / BEFORE_RESUME, folder / "result.json"
    if not old_path.exists():
        return
    old, new = read(old_path), read(new_path)
    first = new[0].get("epoch", 0) if new else float("inf")
    by_epoch = {}
    for line in [x for x in old if x.get("epoch", 0) < first] + new:
        by_epoch.pop(line.get("epoch", 0), None)  # the later line wins, in its place
        by_epoch[line.get("epoch", 0)] = line
    lines = list(by_epoch.values())
    write_text_atomic(new_path, "".join(json.dumps(x) + "\n" for x in lines))
    _write_progress_csv(folder / "progress.csv", lines)
    old_path.unlink()


def _write_progress_csv(path: Path, lines: list[dict]) -> None:
    """progress.csv of `lines` with the columns of its existing header (else of the first
    line), nested values flattened as Tune's CSV logger does ("config/beta")."""
    import csv
    import io

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            else:
                out[f"{prefix}{k}"] = v
        return out
    rows = [flat({k: v for k, v in x.items() if k != "config"}) for x in lines]
    header = None
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    header = header or (list(rows[0]) if rows else [])
    text = io.StringIO()
    writer = csv.DictWriter(text, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _statuses(out: Path) -> set[str]:
    from engine.report import load_trials
    return set(load_trials(out)["status"])


__all__ = ["Search", "grid", "run", "BadInput"]
