"""The search's command line: its flags, their defaults from the `Search`, and the checks
that refuse bad input (one line, exit code 2) before Ray starts."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
from dataclasses import dataclass
import importlib.util
import math
import os
import re
import socket
from pathlib import Path

import models
from engine.data import DATASETS
from engine.eval.groups import GROUPS, parse_groups
from engine.eval.settings import EvalSettings
from engine.run.stopper import CONVERGENCE_TOL, CONVERGENCE_WINDOW, PATIENCE
from engine.run.types import DEFAULT_PRECISION, BadInput, Resources, Search

STORAGE_ENV = "VAE_ABLATIONS_STORAGE"  # the default --storage, e.g. set on every cluster node


# --smoke's data set where --dataset is not given: the 8x8 digits train in a fraction of the
# time of any other set, which is what the tests' smoke runs need.
SMOKE_DATASET = "digits"


# Sample counts of --smoke: enough for a full-rank covariance of 64-d classifier features;
# and the densities it leaves out.
SMOKE_EVAL = {"fid_samples": 300, "ppl_samples": 200, "iwae_k": 20, "nll_images": 100,
              "diagnostic_images": 200, "grad_var_draws": 4}


SMOKE_SKIPS = tuple(name for name, declared in models.DENSITY_SETS.items() if declared.costly)


class _OneLineParser(argparse.ArgumentParser):
    """A flag error is one line, as every other bad input (not argparse's usage block)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_args(search: Search, argv: list[str] | None) -> "Flags":
    """The command line as Flags (argparse's errors: one line, exit code 2; a bad budget or
    storage folder: BadInput)."""
    smoke_dataset = search.smoke.get("dataset", SMOKE_DATASET)
    # `vae-ablations run NAME` (engine/__main__.py) names itself; a script, its file
    prog = os.environ.get("VAE_ABLATIONS_PROG") or None
    p = _OneLineParser(prog=prog, description=search.title)
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default "
                   f"{search.dataset}; with --smoke {smoke_dataset})")
    p.add_argument("--data-root", help="where the real data sets' files are (default "
                   "$VAE_DATA_ROOT, else ~/data); downloaded there if missing and possible")
    p.add_argument("--epochs", metavar="N|auto",
                   help="training epochs per trial, or auto: each trial until its search "
                   f"metric ({search.metric}) has plateaued (the mean over the last "
                   # "%%": argparse %-formats help texts
                   f"{CONVERGENCE_WINDOW:.0%}% of its epochs improves by at most "
                   f"{CONVERGENCE_TOL:.0%}% on as many before them, at {PATIENCE} epochs in a "
                   f"row), at least --min-epochs, at most --max-epochs ({search.epochs})")
    p.add_argument("--max-epochs", metavar="N", help="--epochs auto's cap"
                   + (f" ({search.max_epochs})" if search.max_epochs else ""))
    p.add_argument("--min-epochs", metavar="N", help="--epochs auto: no plateau before this "
                   f"many epochs, so that the learning rate can anneal ({search.min_epochs})")
    p.add_argument("--seeds", type=int, help=f"seeds 0..K-1 per row ({search.seeds})")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny budget for tests: {search.smoke}, unless given explicitly; "
                   f"the evaluation with {SMOKE_EVAL} and without {', '.join(SMOKE_SKIPS)}")
    p.add_argument("--out", help="the run folder (default <storage>/<search>-<dataset>-<n>)")
    p.add_argument("--storage", metavar="DIR",
                   help=f"the folder of run folders (default ${STORAGE_ENV}, else ./runs in the "
                   "working directory); on a cluster, a shared file system that every node "
                   "mounts at this path (NFS, EFS, ...)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print Ray's, Tune's and the trackers' own lines here too (by default "
                   "they go to <run>/search.log and the terminal shows the search's lines only)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run (the latest one, or --out)")
    p.add_argument("--more-seeds", type=int, metavar="K",
                   help="with --resume: give the rows of --rows (every row without it) seeds "
                   "0..K-1; the seeds they lack start, their trials stay")
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
    p.add_argument("--search", choices=("grid", "optuna"), default=search.algorithm,
                   help="optuna samples the search's space instead of running its rows "
                   f"({search.algorithm})")
    p.add_argument("--samples", type=int,
                   help=f"trials for --search optuna ({search.samples})")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most this many trials at once (default: as resources allow)")
    p.add_argument("--rows", help="only these rows, comma-separated, of "
                   f"{', '.join(search.rows)}; any case, a Greek letter spelled out "
                   "(σ: sigma, Σ: Sigma)".replace("%", "%%"))
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override a config field in every row, e.g. --set latent_dim=8")
    p.add_argument("--image-every", type=int, default=10,
                   help="epochs between TensorBoard image grids")
    p.add_argument("--checkpoint-every", type=checkpoint_cadence, default="5m",
                   metavar="N|DURATION",
                   help="N epochs between checkpoints, or a duration (90s, 5m, 1h): at most one "
                   "checkpoint per that much training; always the last epoch's (5m)")
    p.add_argument("--precision", choices=tuple(models.PRECISIONS), default=DEFAULT_PRECISION,
                   help="what the encoder and decoder train in (autocast; fp16 with a loss "
                   "scaler); the loss terms, evaluation and checkpoints stay fp32 (fp32)")
    p.add_argument("--tracker", action="append", choices=tuple(TRACKERS), default=[],
                   help="also log every trial to this experiment tracker (repeatable): mlflow "
                   "($MLFLOW_TRACKING_URI, else <run>/mlflow.db), wandb (W&B: group = the row), "
                   "aim (<run>/.aim); each an extra: pip install 'vae-ablations[mlflow]'")
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
                   "densities=prior,gmm10 (see engine/eval/settings.py EvalSettings)")
    ns = p.parse_args(argv)  # (the Namespace stays here: Flags is what leaves this module)
    storage, storage_from = ns.storage, "--storage"  # named in its errors
    if storage is None and os.environ.get(STORAGE_ENV):
        storage, storage_from = os.environ[STORAGE_ENV], f"${STORAGE_ENV}"
    if storage and not ns.out:  # (--out wins over $VAE_ABLATIONS_STORAGE)
        storage = str(check_storage(storage, storage_from))
    budget = search.smoke if ns.smoke else {}
    # --epochs / --max-epochs / --min-epochs as given, else the study's budget's
    given = frozenset(k for k in ("epochs", "max_epochs", "min_epochs")
                      if getattr(ns, k) is not None)
    kind, epochs, min_epochs = check_budget(
        *(budget.get(k, getattr(search, k)) if getattr(ns, k) is None else getattr(ns, k)
          for k in ("epochs", "max_epochs", "min_epochs")), given)
    return Flags(
        dataset=ns.dataset or (smoke_dataset if ns.smoke else search.dataset),
        data_root=ns.data_root, budget=kind, epochs=epochs, min_epochs=min_epochs,
        seeds=budget.get("seeds", search.seeds) if ns.seeds is None else ns.seeds,
        smoke=ns.smoke, out=ns.out, storage=storage, storage_from=storage_from,
        verbose=ns.verbose, resume=ns.resume, more_seeds=ns.more_seeds, address=ns.address,
        cpus_per_trial=ns.cpus_per_trial, gpus_per_trial=ns.gpus_per_trial,
        workers_per_trial=ns.workers_per_trial, scheduler=ns.scheduler, algorithm=ns.search,
        samples=budget.get("samples", search.samples) if ns.samples is None else ns.samples,
        max_concurrent=ns.max_concurrent, rows=ns.rows, set=tuple(ns.set),
        image_every=ns.image_every, checkpoint_every=ns.checkpoint_every,
        precision=ns.precision, trackers=tuple(dict.fromkeys(ns.tracker)), eval=ns.eval,
        fid_samples=ns.fid_samples, features=ns.features,
        inception_weights=ns.inception_weights, eval_set=tuple(ns.eval_set))


@dataclass(frozen=True)
class Flags:
    """The command line, parsed once: every flag with the study's (or --smoke's) default
    filled in and the budget resolved. Every later stage (the run folder, the run spec, the
    search) takes this whole."""
    dataset: str
    data_root: str | None
    budget: str  # "fixed": every trial trains `epochs`; "auto": each to its plateau
    epochs: int  # a fixed budget's epochs, an auto budget's cap (--max-epochs)
    min_epochs: int  # an auto budget's least epochs (0 for a fixed one)
    seeds: int
    smoke: bool
    out: str | None
    storage: str | None  # the folder of run folders, checked; None: ./runs
    storage_from: str  # "--storage" or "$VAE_ABLATIONS_STORAGE": named in its errors
    verbose: bool
    resume: bool
    more_seeds: int | None  # --more-seeds K: with --resume, seeds 0..K-1 for --rows
    address: str | None
    cpus_per_trial: float
    gpus_per_trial: float
    workers_per_trial: int
    scheduler: str
    algorithm: str  # --search: "grid" | "optuna"
    samples: int
    max_concurrent: int
    rows: str | None  # --rows as given (matched to the study's rows by spec.resolve_rows)
    set: tuple[str, ...]
    image_every: int
    checkpoint_every: tuple[int, float]  # (epochs, 0) or (0, seconds)
    precision: str
    trackers: tuple[str, ...]
    eval: str | None
    fid_samples: int | None
    features: str | None
    inception_weights: str | None
    eval_set: tuple[str, ...]

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus_per_trial, self.gpus_per_trial, self.workers_per_trial)


def eval_settings(search: Search, flags: Flags) -> EvalSettings:
    """The search's EvalSettings with --smoke's sample counts and the flags applied
    (BadInput on an unknown or bad setting)."""
    changes: dict = dict(SMOKE_EVAL) if flags.smoke else {}
    if flags.smoke:  # fitting GMM-100 and training the second stage take longest
        changes["densities"] = tuple(d for d in search.evaluation.densities
                                     if d not in SMOKE_SKIPS) or (models.PRIOR,)
    try:
        changes.update(parse_assignments("--eval-set", flags.eval_set, EvalSettings()))
    except ValueError as e:
        raise BadInput(str(e)) from None
    if flags.eval is not None:
        changes["metrics"] = parse_groups(flags.eval)
    for flag in ("fid_samples", "features", "inception_weights"):
        if getattr(flags, flag) is not None:
            changes[flag] = getattr(flags, flag)
    try:
        settings = search.evaluation.replace(**changes)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if settings.inception_weights and not Path(settings.inception_weights).is_file():
        raise BadInput(f"--inception-weights {settings.inception_weights}: no such file")
    if "fid" in settings.metrics and "densities" in {a.split("=", 1)[0].strip()
                                                     for a in flags.eval_set}:
        _check_table_densities(search, settings)
    return settings


def _check_table_densities(search: Search, settings: EvalSettings) -> None:
    """A table column of samples from a density that --eval-set densities= left out would
    only be empty ("—") with no reason given: refused instead."""
    from engine.eval.settings import DENSITY_SETS
    for metric in search.table_metrics:
        name = next((d for d in DENSITY_SETS if metric.endswith(f"_sample_{d}")), None)
        if name is not None and name not in settings.densities:
            raise BadInput(f"--eval-set densities={','.join(settings.densities)}: the table's "
                           f"{metric} samples from {name}; include {name}, or leave "
                           f"densities to the study ({','.join(search.evaluation.densities)})")


_UNITS = {"s": 1, "m": 60, "h": 3600}


def checkpoint_cadence(text: str) -> tuple[int, float]:
    """--checkpoint-every: "3" -> (3 epochs, 0 s); "5m" -> (0 epochs, 300 s)."""
    text = str(text).strip()
    try:
        if text[-1:] in _UNITS:
            seconds = float(text[:-1]) * _UNITS[text[-1]]
            if seconds > 0 and math.isfinite(seconds):
                return 0, seconds
        elif int(text) >= 1:
            return int(text), 0.0
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{text!r}: give a number of epochs >= 1 (e.g. 5) or a duration > 0 (90s, 5m, 1h)")


def epochs_value(flag: str, value, low: int = 1, auto: bool = False) -> int | str:
    """A budget flag's value: a whole number >= `low` (or "auto" where `auto`), else
    BadInput."""
    text = str(value).strip()
    if auto and text.lower() == "auto":
        return "auto"
    try:
        number = int(text)
    except ValueError:
        raise BadInput(f"{flag} {text!r}: give a whole number of epochs"
                       + (" or auto" if auto else "")) from None
    if number < low:
        raise BadInput(f"{flag} {number} must be >= {low}" + (" (or auto)" if auto else ""))
    return number


def check_budget(epochs, max_epochs, min_epochs, given=frozenset({"epochs"})
                 ) -> tuple[str, int, int]:
    """--epochs N, or --epochs auto with its cap --max-epochs (and --min-epochs), checked
    (BadInput, one line): ("fixed", N, 0) or ("auto", cap, least epochs). `given`: the
    flags given on the command line (a study's default cap is no flag for --epochs N)."""
    epochs = epochs_value("--epochs", epochs, auto=True)
    maximum = None if max_epochs is None else epochs_value("--max-epochs", max_epochs)
    minimum = epochs_value("--min-epochs", min_epochs)
    if epochs != "auto":
        for flag, value in (("--max-epochs", max_epochs), ("--min-epochs", min_epochs)):
            if flag[2:].replace("-", "_") in given:
                raise BadInput(f"{flag} {value} is for --epochs auto; with "
                               f"--epochs {epochs} every trial trains {epochs} epochs (give "
                               f"--epochs auto {flag} N to train each to its plateau)")
        return "fixed", epochs, 0
    if maximum is None:
        raise BadInput("--epochs auto trains each trial until its metric plateaus and needs "
                       "a cap: give --max-epochs N")
    if minimum > maximum:
        raise BadInput(f"--min-epochs {minimum} is above --max-epochs {maximum}"
                       if "min_epochs" in given else
                       f"--max-epochs {maximum} is below the {minimum} epochs before which no "
                       f"plateau is taken (--min-epochs); give a higher cap or --min-epochs N")
    return "auto", maximum, minimum


def check_args(search: Search, flags: Flags) -> None:
    """The flags that parse_args could not check alone (BadInput, one line)."""
    if flags.dataset not in DATASETS:
        raise BadInput(f"--dataset {flags.dataset!r} is unknown; known: {', '.join(DATASETS)}")
    if flags.more_seeds is not None and not flags.resume:
        raise BadInput(f"--more-seeds {flags.more_seeds} adds seeds to an existing run: give "
                       "--resume (and --out RUN), or --seeds K for a new run")
    for name, value, low in (("--seeds", flags.seeds, 1),
                             ("--more-seeds", 1 if flags.more_seeds is None else flags.more_seeds,
                              1),
                             ("--workers-per-trial", flags.workers_per_trial, 1),
                             ("--samples", flags.samples, 1),
                             ("--image-every", flags.image_every, 1),
                             ("--max-concurrent", flags.max_concurrent, 0)):
        if value < low:
            raise BadInput(f"{name} {value} must be >= {low}")
    if not (flags.cpus_per_trial > 0 and math.isfinite(flags.cpus_per_trial)):
        raise BadInput(f"--cpus-per-trial {flags.cpus_per_trial} must be > 0")
    if not (flags.gpus_per_trial >= 0 and math.isfinite(flags.gpus_per_trial)):
        raise BadInput(f"--gpus-per-trial {flags.gpus_per_trial} must be >= 0")
    if flags.gpus_per_trial > 1 and flags.gpus_per_trial != int(flags.gpus_per_trial):
        raise BadInput(f"--gpus-per-trial {flags.gpus_per_trial}: above 1 it must be whole")
    if flags.workers_per_trial > 1 and 0 < flags.gpus_per_trial < 1:
        raise BadInput(f"--gpus-per-trial {flags.gpus_per_trial} with --workers-per-trial "
                       f"{flags.workers_per_trial} would put two DDP ranks on one GPU, which NCCL "
                       "refuses; give each worker a whole GPU")
    if flags.algorithm == "optuna" and not search.space:
        raise BadInput(f"--search optuna: {search.name} declares no space to sample; it runs "
                       "its rows as a grid")
    if flags.data_root is not None and not Path(flags.data_root).expanduser().is_dir():
        raise BadInput(f"--data-root {flags.data_root}: no such folder; give the folder that "
                       f"holds the data sets' folders (e.g. <root>/{flags.dataset}), or create "
                       "it for a download")
    if search.metric.split("/")[0] not in ("val", "train"):
        raise BadInput(f"metric {search.metric!r}: early stopping needs a per-epoch "
                       "val/ or train/ metric")
    if flags.out and flags.storage and flags.storage_from == "--storage":
        raise BadInput("--out and --storage: give one (--out is the run folder itself, "
                       "--storage the folder in which each run gets its own)")
    if flags.out and "://" in flags.out:
        check_storage(flags.out, "--out")
    check_address(flags.address)
    if flags.address is None:
        check_local_resources(flags)
    for tracker in flags.trackers:
        check_tracker(tracker)


def check_local_resources(flags: Flags) -> None:
    """A trial that this machine cannot hold, refused before Ray starts (the local Ray
    instance counts the same CPUs and CUDA devices; a cluster is checked once joined, as it
    may be another size)."""
    import torch
    need_cpu = flags.cpus_per_trial * flags.workers_per_trial
    need_gpu = flags.gpus_per_trial * flags.workers_per_trial
    have_cpu, have_gpu = os.cpu_count() or 1, torch.cuda.device_count()
    if need_gpu > have_gpu or need_cpu > have_cpu:
        raise BadInput(f"a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU but this machine "
                       f"has {have_cpu} CPU and {have_gpu} GPU; lower --cpus-per-trial / "
                       "--gpus-per-trial / --workers-per-trial, or join a cluster (--address)")


# --tracker: the package each needs (an optional extra of pyproject.toml)
TRACKERS = {"mlflow": "mlflow", "wandb": "wandb", "aim": "aim"}


def check_tracker(name: str) -> None:
    """A tracker whose package is installed and, for W&B, that can log: an API key
    ($WANDB_API_KEY or `wandb login`'s) or WANDB_MODE=offline/disabled (else Ray's callback
    would fail only once the search had started)."""
    if importlib.util.find_spec(TRACKERS[name]) is None:
        raise BadInput(f"--tracker {name}: the {TRACKERS[name]} package is not installed; "
                       f"pip install 'vae-ablations[{name}]' (or pip install {TRACKERS[name]})")
    if name == "wandb" and os.environ.get("WANDB_MODE") not in ("offline", "disabled") \
            and not os.environ.get("WANDB_API_KEY"):
        import netrc  # where `wandb login` keeps the key, under the W&B server's host name
        from urllib.parse import urlparse
        host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
        try:
            logged_in = netrc.netrc().authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        # (wandb.login(prompt=False) would ask the server, which needs the network now)
        if not logged_in and not os.environ.get("WANDB_SETUP_API_KEY_HOOK"):
            raise BadInput("--tracker wandb: no W&B API key; set WANDB_API_KEY, run `wandb "
                           "login`, or set WANDB_MODE=offline (runs kept under <run>/wandb "
                           "for `wandb sync`)")


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


def parse_assignments(flag: str, pairs: list[str], defaults) -> dict:
    """FIELD=VALUE pairs of a flag (--set, --eval-set) for the dataclass instance `defaults`,
    each VALUE cast to its field's default's type (a tuple: comma-separated; None: text).
    Raises ValueError, one line, on a pair that is malformed, names no field (with the
    closest field's name for a misspelling) or does not cast."""
    fields = [f.name for f in dataclasses.fields(defaults)]
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            # a field with the wrong separator ("latent_dim:8", "latent_dim 8") or none
            # ("latent_dim"): the name is right, the form is not, so say the form
            name = re.match(r"\w*", pair)[0]
            if name in fields:
                default = getattr(defaults, name)
                shown = (",".join(map(str, default)) if isinstance(default, tuple)
                         else "VALUE" if default is None else default)
                raise ValueError(f"{flag} {pair!r}: expected FIELD=VALUE, e.g. "
                                 f"{name}={pair[len(name):].lstrip(':= ') or shown}")
            key = name or pair  # the hint below names the misspelt field, not the whole pair
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ValueError(f"{flag} {pair!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(fields)}"
                             + (f" (did you mean {key} -> {close[0]}?)" if close else ""))
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                out[key] = tuple(v for v in value.split(",") if v)
            elif default is None or isinstance(default, str):
                out[key] = value
            else:
                out[key] = type(default)(value)
        except ValueError:
            raise ValueError(f"{flag} {pair!r}: {value!r} is not a valid "
                             f"{type(default).__name__} for {key}") from None
    return out
