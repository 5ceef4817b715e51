"""A search: rows of configurations x seeds on one data set for a budget, run by Ray Tune.

A search script declares a `Search` (a docstring, the rows, the seeds, the metric, the paper's
numbers) and calls `run(search)`, which gives it the engine's common flags (engine/run/cli.py):

    --dataset D --epochs N|auto --max-epochs N --min-epochs N --seeds K --smoke --out DIR
    --storage DIR --resume --address ADDR
    --gpus-per-trial G --cpus-per-trial C --workers-per-trial W
    --scheduler fifo|asha --search grid|optuna --samples N --rows A,B --set FIELD=VALUE

Every row is resolved and built for the data set before anything starts (engine/run/spec.py); a
bad one, or any other bad input, is one line on stderr and exit code 2. Seeds are an explicit
axis: every (row, seed) is its own trial, and the report groups them.
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
from pathlib import Path

from engine.run.cli import Flags, parse_args
from engine.files import BOARDS, write_json_atomic
from engine.run import console
from engine.run.folder import lock_run_folder, release_run_folder
from engine.run.record import now
from engine.run.resume import BEFORE_RESUME, merge_results, resume
from engine.run.spec import budget_text, prepare, seeds_text
from engine.run.types import BadInput, Resources, Row, RunSpec, Search, grid  # noqa: F401


def run(search: Search, argv: list[str] | None = None, callbacks: tuple = (),
        after=None) -> int:
    """Validate, run the search with Ray Tune, write and print the report. Exit code:
    0, 1 if a trial failed with an error (the others' results are kept), 2 on bad input,
    130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM; --resume finishes either).
    `callbacks` are extra ray.tune.Callback objects (e.g. a benchmark's timer).
    `after(FinishedRun)`, if given, runs once the report is written (a study's own plots into <run>/report/); if it raises,
    the error is one line on stderr and the exit code 1."""
    try:
        flags = parse_args(search, argv)
        spec, out = prepare(search, flags, argv)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # one search at a time in a run folder, until this one has ended
        lock = lock_run_folder(out)
    except BadInput as e:
        if not flags.resume:
            release_run_folder(out)
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run_locked(flags, spec, out, callbacks, after)
    finally:
        os.close(lock)  # the kernel lets go of it too where the process dies first


def _run_locked(flags: Flags, spec: RunSpec, out: Path, callbacks: tuple, after) -> int:
    from engine.run import ray_backend  # imports Ray: only once the input is known to be good
    give_up = None if flags.resume else (lambda: release_run_folder(out))
    with console.quiet(out, flags.verbose):  # Ray's, Tune's, the trackers' lines: search.log
        code = connect(flags.address, spec.resources, ray_backend, give_up)
        if code is not None:
            if not flags.resume:
                release_run_folder(out)
            return code
        # a resume's spec is the run's own, its record appended under environment["resumes"]
        spec.save(out)
        (out / "finished.json").unlink(missing_ok=True)
        outcome = _execute(spec, out, flags.resume, ray_backend, list(callbacks))
        # Ray stopped now, not at exit (where it waits another 0.5 s), and before the report:
        # an interrupted run's one line, after the report, must be the last
        ray_backend.shutdown()
    return _finish(spec, out, outcome, after)


def connect(address: str | None, res: Resources, ray_backend, give_up=None) -> int | None:
    """Start or join Ray and check that a trial fits it; None when it does, else the exit
    code after one line on stderr (`give_up()` is called first where the join times out and
    the process ends at once)."""
    try:
        ray_backend.init(address, give_up)
    except Exception as e:  # noqa: BLE001  (ConnectionError, AuthenticationError, ...)
        causes = " ".join(str(c) for c in (e, e.__cause__) if c)
        hint = ("; the cluster uses token authentication: put its token (ray get-auth-token on "
                "the head) in ~/.ray/auth_token or $RAY_AUTH_TOKEN and set RAY_AUTH_MODE=token"
                if "token" in causes.lower() else
                "; check that the address is the head node's (ray status there prints it)")
        first = (str(e).splitlines() or [type(e).__name__])[0]
        if address is None:  # a local Ray that did not start (e.g. a machine too loaded)
            print(f"error: cannot start Ray on this machine: {first}; its own logs are in "
                  "/tmp/ray/session_latest/logs; try again once the machine is less busy, or "
                  "join a running Ray with --address", file=console.err())
        else:
            print(f"error: cannot join Ray at --address {address}: {first}{hint}",
                  file=console.err())
        return 2
    have = ray_backend.cluster_resources()
    need_cpu, need_gpu = res.cpu * res.workers, res.gpu * res.workers
    if need_gpu > have.get("GPU", 0) or need_cpu > have.get("CPU", 0):
        # A cluster joined by --address may autoscale (cluster.yaml's starts with no GPU
        # worker): there the trials wait for nodes, unless Ray knows the cluster's limits
        # and a trial exceeds them. This machine alone never grows.
        most = ray_backend.max_cluster_resources() if address else None
        if address and (most is None or (need_gpu <= most.get("GPU", 0)
                                              and need_cpu <= most.get("CPU", 0))):
            print(f"note: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU; the Ray cluster "
                  f"has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU now, so the "
                  "trials wait until its autoscaler adds nodes"
                  + ("" if most else " (Ray does not tell this driver how far the cluster can "
                     "grow: if no node type can hold a trial's worker, nothing starts; stop "
                     "it with Ctrl-C)"), flush=True, file=console.err())
        else:
            print(f"error: a trial needs {need_cpu:g} CPU and {need_gpu:g} GPU but the Ray "
                  f"cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU"
                  f"{' at most' if most else ''}; lower --cpus-per-trial / --gpus-per-trial / "
                  "--workers-per-trial", file=console.err())
            return 2
    return None


def _execute(spec: RunSpec, out: Path, resuming: bool, ray_backend, callbacks: list) -> str:
    """Run the experiment (or finish it from the run's own files, engine/run/resume.py):
    "complete", "interrupted", "terminated", "disk full" or "read-only"."""
    print(f"{spec.title}: {len(spec.rows)} rows x {seeds_text(spec)} on {spec.dataset}, "
          f"{budget_text(spec)}, scheduler {spec.scheduler} -> {out}", flush=True,
          file=console.out())
    _train_feature_classifier(spec)
    # the report's imports while the trials run, when this process only waits on them
    callbacks = [*callbacks, ray_backend.OnFirstTrial(_import_report)]

    def experiment(**kw) -> str:  # kw: what a resume changes (the trials, the samples)
        return ray_backend.run_experiment(spec, out, callbacks=callbacks, **kw)
    try:
        if resuming:
            outcome = resume(out, spec, experiment)
        else:
            outcome = experiment()
        for kept in out.glob(f"*/{BEFORE_RESUME}"):  # from a resume whose driver was killed
            merge_results(kept.parent)
    except OSError as e:  # the driver's own writes (merge, search.json) on a full disk
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        outcome = "read-only" if e.errno == errno.EROFS else "disk full"
    return outcome


def _import_report() -> None:
    """The report's imports (scipy.stats, matplotlib and its PDF writer: ~1 s on 2 cores),
    made while the trials run (ray_backend.OnFirstTrial), so that the report starts at once
    after the last trial (benchmarks/search_fixed_cost.py). An import that fails here fails
    again where _finish imports the report, and says why there."""
    with contextlib.suppress(Exception):
        for name in ("engine.report", "matplotlib.backends.backend_pdf"):
            importlib.import_module(name)


def _train_feature_classifier(spec: RunSpec) -> None:
    """FID's classifier features (engine/eval/metrics/features.py), trained here on the
    driver, with all of its threads, before any trial starts, where this machine's cache lacks
    them: in a trial it trained on that trial's one thread, at its first FID, while every other
    trial that reached its own first FID waited on the cache's lock (measured: ~6.5 min with one
    of make run's two slots idle). Rows with data options (e.g. added noise) have other images,
    and their trials train their own as before."""
    if "fid" not in spec.evaluation.metrics or spec.evaluation.features != "classifier":
        return
    import time
    import torch
    from engine.data import load_dataset
    from engine.eval.metrics.features import cache_dir, classifier_cached, classifier_space
    data = load_dataset(spec.dataset, spec.data_root)
    if data.train.labels is None or classifier_cached(data):
        return  # without labels the evaluation says why FID is not computed
    print(f"FID features: training {spec.dataset}'s classifier once, before the trials, on "
          f"{torch.get_num_threads()} threads (cached in {cache_dir() / 'features'})",
          flush=True, file=console.out())
    start = time.perf_counter()
    with torch.no_grad():  # as a trial calls it; the training enables its own gradients
        space = classifier_space(data, "cpu")
    print(f"FID features: {space.description} ({time.perf_counter() - start:.0f} s)",
          flush=True, file=console.out())


# outcomes where the run's storage stopped taking writes: one line, no report (it cannot be
# written either), exit 1
STORAGE_FAILED = {"disk full": ("the disk of {out} is full", "free space"),
                  "read-only": ("the storage of {out} turned read-only", "make it writable")}


def _finish(spec: RunSpec, out: Path, outcome: str, after) -> int:
    """The report written and printed, the study's own step run; the exit code."""
    if outcome in STORAGE_FAILED:
        what, fix = STORAGE_FAILED[outcome]
        print(f"error: {what.format(out=out)}: the search stopped; {fix}, then --resume "
              f"--out {out} continues it", file=sys.stderr)
        return 1
    if outcome == "complete":
        write_json_atomic(out / "finished.json", {"finished": True, "ended": now()})
    from engine.report import write_report  # pandas, matplotlib: only once there is a report
    from engine.run.finished import FinishedRun
    text = write_report(out)
    print(text)
    print(f"TensorBoard: tensorboard --logdir {out / BOARDS}")
    failed = False
    if after is not None and outcome == "complete":
        try:
            after(FinishedRun.read(out, spec))
        except Exception as e:  # noqa: BLE001  (the trials' results are written already)
            print(f"error: the study's own report step failed: {type(e).__name__}: {e}",
                  file=sys.stderr)
            failed = True
    if "mlflow" in spec.trackers:  # the report with the study's own plots
        _log_report(out, outcome == "complete")
    if outcome != "complete":  # interrupted (SIGINT: 130) or terminated (SIGTERM: 128 + 15)
        print(f"{outcome}: the unfinished trials keep their checkpoints; finish the run "
              f"with --resume --out {out}", file=sys.stderr)
        return 143 if outcome == "terminated" else 130
    return 1 if failed or "error" in _statuses(out) else 0


def _log_report(out: Path, finished: bool) -> None:
    """The report's files to the search's MLflow run (engine/run/mlflow_store.py); where
    MLflow cannot take them the files are still in the run folder, so it is one line."""
    from engine.run.mlflow_store import log_report
    try:
        log_report(out, finished)
    except Exception as e:  # noqa: BLE001
        print(f"MLflow: the report was not logged: {type(e).__name__}: {e}", file=sys.stderr)


def _statuses(out: Path) -> set[str]:
    from engine.report import load_trials  # pandas: as in _finish
    return set(load_trials(out)["status"])


__all__ = ["Search", "Row", "grid", "run", "BadInput"]
