"""`vae-ablations evaluate`: the evaluation suite again, after the search, on one trial's
newest checkpoint or on every completed trial of a run.

A run's trials are evaluated as Ray Tasks (on this machine, or with --address on the
cluster that ran the search), so a cluster evaluates them in parallel; each trial's result
goes to its own folder as evaluation.json (the metrics, the settings used, the epoch), never
into result.json, which stays what the trial itself reported. A trial whose evaluation fails
gets evaluation_failed.json instead (its earlier evaluation.json, if any, is kept) and costs
the others nothing. The report merges the files (engine/report/evaluations.py) and is
rewritten at the end.

Bad input (a folder that is neither a run nor a trial, an unknown group, a row the run does
not have, a device this machine lacks) is one line on stderr and exit 2, before Ray starts
or anything is evaluated.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from engine.files import EVALUATION_FAILED_FILE, EVALUATION_FILE, write_json_atomic

# flags that change the settings the search evaluated with (EvalSettings' fields)
SETTING_FLAGS = ("fid_samples", "features", "inception_weights")


def main(args) -> int:
    """The evaluate command: a run folder (search.json) or a trial / checkpoint folder."""
    folder = Path(args.folder)
    if (folder / "search.json").is_file():
        return evaluate_run(args)
    try:
        if args.rows or args.address or args.gpus_per_trial is not None:
            raise ValueError(f"{folder} is not a run folder (no search.json): --rows, "
                             "--address and --gpus-per-trial choose a run's trials")
        return evaluate_trial(args)
    except ValueError as e:  # bad input, found before anything is evaluated
        print(f"error: {e}", file=sys.stderr)
        return 2


# --- one trial --------------------------------------------------------------------------

def evaluate_trial(args) -> int:
    """One trial (or checkpoint) folder, in this process: print the metrics, write the JSON."""
    job = prepare(Path(args.folder), changes(args), args.data_root, args.device)
    path = _output(args.out, job["trial_dir"])
    out = run_job(job)
    write_json_atomic(path, out)
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k} = {v:.6g}")
    for k, why in out["notes"].items():
        print(f"{k}: {why}")
    print(f"written: {path}")
    return 0


def changes(args) -> dict:
    """The evaluation settings the flags change (checked: ValueError, one line)."""
    from engine.eval.groups import parse_groups
    from engine.eval.settings import EvalSettings
    out = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    if args.eval:
        out["metrics"] = parse_groups(args.eval)
    EvalSettings().replace(**out)  # an unknown group or a bad value: said now, not per trial
    return out


def prepare(folder: Path, changes: dict, data_root: str | None, device: str | None) -> dict:
    """Everything an evaluation needs, each piece checked first: an evaluation takes minutes,
    and a bad input found only at its end would waste them. Raises ValueError, one line."""
    from engine.data import apply_options, load_dataset
    from engine.load import built, newest_checkpoint, trial_spec

    device = _device(device)
    # a checkpoint folder is Tune's to replace: what the evaluation writes goes to its trial
    trial_dir = folder.parent if (folder / "state.pt").is_file() else folder
    state = newest_checkpoint(folder, runs_too=True)
    try:
        spec = trial_spec(state, folder)
        settings = spec.evaluation.replace(**changes)
    except TypeError as e:  # e.g. a setting of the wrong type in an edited params.json
        raise ValueError(f"{folder}: the evaluation settings: {e}") from None
    data = apply_options(load_dataset(spec.dataset,  # DataNotFound: names the file
                                      data_root or spec.data_root),
                         spec.data)  # the row's noise, if any
    model = built(spec.config, data.image_shape, state["model"], folder)
    return {"model": model.place(device), "data": data, "device": device, "seed": spec.seed,
            "settings": settings, "state": state, "trial_dir": trial_dir}


def run_job(job: dict) -> dict:
    """The evaluation of a prepared job, as evaluation.json holds it: the checkpoint's epoch,
    the settings, when, the metrics and their notes."""
    from engine.eval.evaluate import evaluate
    state, settings = job["state"], job["settings"]
    out = evaluate(job["model"], job["data"], job["device"], settings,
                   seed=job["seed"], out_dir=job["trial_dir"])
    return {"epoch": state["epoch"], "settings": settings.to_dict(),
            "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **out}


def _device(text: str | None):
    """--device as a torch.device this machine has (default: cuda where there is one)."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:  # torch's message lists twenty device types this engine never uses
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text!r}: use cpu or cuda (cuda:N for the N-th GPU)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {text}: this machine has no CUDA GPU that torch can "
                             "use; use --device cpu (or leave --device out)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {text}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


def _output(out: str | None, trial_dir: Path) -> Path:
    """Where the metrics' JSON goes, checked to be writable now rather than after the run."""
    path = Path(out) if out else trial_dir / EVALUATION_FILE
    named = f"--out {out}" if out else f"{path} (the default; choose another with --out)"
    if path.is_dir():
        raise ValueError(f"{named} is a folder; give a file name, e.g. "
                         f"{path / EVALUATION_FILE}")
    if not path.parent.is_dir():
        raise ValueError(f"{named}: the folder {path.parent} does not exist; create it "
                         f"(mkdir -p {path.parent}) or write into an existing folder")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{named}: the folder {path.parent} is not writable; write into "
                         "another folder")
    return path


# --- a whole run ------------------------------------------------------------------------

def evaluate_run(args) -> int:
    """Every completed trial of the run (of --rows), each a Ray Task; then the report.
    Exit 0, 1 where a trial's evaluation failed (the others' are kept), 2 on bad input."""
    run = Path(args.folder)
    try:
        chosen, flags = _chosen_trials(run, args.rows), changes(args)
        if args.out:
            raise ValueError("--out names one trial's file; a run's trials each write "
                             f"<trial>/{EVALUATION_FILE}")
        _nothing_to_evaluate(run, chosen, flags)
        cpu, gpu = _resources(run, args)
        from engine.run.cli import check_address
        check_address(args.address)
    except ValueError as e:  # BadInput and NotARunFolder are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    from engine.run import console, ray_backend  # Ray: only once the input is known good
    from engine.run.search import connect
    from engine.run.types import Resources
    with console.quiet(run):  # Ray's own lines to <run>/search.log, as a search's
        code = connect(args.address, Resources(cpu=cpu, gpu=gpu), ray_backend)
        if code is not None:
            return code
        device = args.device or ("cuda" if gpu else "cpu")
        print(f"evaluating {len(chosen)} trial(s) of {run} as Ray Tasks ({cpu:g} CPU, "
              f"{gpu:g} GPU each)", flush=True, file=console.out())
        try:
            results = ray_backend.map_tasks(
                evaluate_task, [(str(t.resolve()), flags, args.data_root, device)
                                for t in chosen],
                cpu, gpu, done=lambda i, result: _record(chosen[i], result, console.out()))
        finally:
            ray_backend.shutdown()
    failed = sum(isinstance(r, BaseException) or "error" in r for r in results)
    from engine.report import NotARunFolder, write_report
    try:
        print(write_report(run))
    except NotARunFolder as e:  # e.g. report/ planted as a link: the evaluations are kept
        print(f"error: the report: {e}", file=sys.stderr)
        return 1
    if failed:
        print(f"error: the evaluation of {failed} of {len(chosen)} trial(s) failed "
              f"(each trial's {EVALUATION_FAILED_FILE} says why; the report notes them)",
              file=sys.stderr)
    return 1 if failed else 0


def evaluate_task(folder: str, changes: dict, data_root: str | None, device: str) -> dict:
    """One trial's evaluation, run in a Ray Task: evaluation.json's content, or {"error":
    one line} where it failed (a damaged checkpoint, a data set missing on that node)."""
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        device = "cpu"  # a task Ray gave no GPU (--gpus-per-trial 0 on a GPU cluster)
    try:
        return run_job(prepare(Path(folder), changes, data_root, device))
    except Exception as e:  # noqa: BLE001  (one trial's failure is its own)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def _record(trial: Path, result, stream=None) -> None:
    """Write what a task returned into its trial's folder, and say it in a line."""
    if isinstance(result, BaseException):  # the task's worker died (e.g. out of memory)
        result = {"error": f"{type(result).__name__}: {str(result).splitlines()[0]}"}
    if "error" in result:
        write_json_atomic(trial / EVALUATION_FAILED_FILE, {
            "error": result["error"],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        print(f"{trial.name}: failed: {result['error']}", flush=True, file=stream)
        return
    write_json_atomic(trial / EVALUATION_FILE, result)
    (trial / EVALUATION_FAILED_FILE).unlink(missing_ok=True)  # an earlier failure, now mended
    count = sum(isinstance(v, float) and not k.startswith("time/") for k, v in result.items())
    print(f"{trial.name}: {count} metrics, epoch {result['epoch']}", flush=True, file=stream)


def _chosen_trials(run: Path, rows: str | None) -> list[Path]:
    """The completed trials' folders, of the rows --rows names (as a search's --rows takes
    them); ValueError, one line, where it names none of the run's rows."""
    from engine.report import load_trials
    from engine.run.spec import rows_named
    trials = load_trials(run)
    done = trials[trials["status"] == "completed"]
    if rows:
        labels = list(dict.fromkeys(trials["label"]))
        wanted = set()
        for given in (r.strip() for r in rows.split(",") if r.strip()):
            found = rows_named(given, labels)
            if len(found) != 1:
                raise ValueError(f"--rows: {'unknown row' if not found else 'ambiguous'} "
                                 f"{given!r}; rows of {run}: {', '.join(labels)}")
            wanted.add(found[0])
        done = done[done["label"].isin(wanted)]
    return [run / name for name in done["trial"]]


def _nothing_to_evaluate(run: Path, chosen: list[Path], changes: dict) -> None:
    """ValueError, one line, where the command would evaluate nothing."""
    if not chosen:
        raise ValueError(f"{run} has no completed trial to evaluate (of --rows); finish the "
                         f"search first (--resume --out {run})")
    if "metrics" in changes and not changes["metrics"]:
        raise ValueError("--eval none: name the groups to evaluate (or all)")
    if "metrics" not in changes:
        from engine.load import run_spec
        if not run_spec(run).evaluation.metrics:
            raise ValueError("the search evaluated no group (--eval none); name the groups "
                             "with --eval, e.g. --eval reconstruction, or --eval all")


def _resources(run: Path, args) -> tuple[float, float]:
    """CPUs and GPUs per trial's task: a trial's of the run, unless --gpus-per-trial or
    --device cpu says otherwise."""
    from engine.load import run_spec
    res = run_spec(run).resources
    cpu, gpu = float(res.cpu), float(res.gpu)
    if args.gpus_per_trial is not None:
        if args.gpus_per_trial < 0:
            raise ValueError(f"--gpus-per-trial {args.gpus_per_trial:g} must be >= 0")
        gpu = args.gpus_per_trial
    if args.device is not None:
        if args.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {args.device!r}: a run's trials take cpu or cuda "
                             "(Ray gives each task its GPU)")
        if args.device == "cpu":
            gpu = 0.0
        elif not gpu:
            gpu = 1.0
    return cpu, gpu
