"""The engine's command line: `vae-ablations` once installed (pyproject.toml's console
script), or `python -m engine`.

    vae-ablations run ablation_uae --smoke        # a study of searches/, with the engine's flags
    vae-ablations report runs/ablation_uae    # write runs/ablation_uae/report/, print the table
    vae-ablations status runs/ablation_uae    # every trial's state, epochs and latest metric
    vae-ablations evaluate runs/ablation_uae/UAE_seed0_...   # evaluate a trial's checkpoint
    vae-ablations evaluate runs/ablation_uae --eval all      # every trial, into the report
    vae-ablations export runs/ablation_uae best/   # the best trial, for engine.load.load_model

Bad input (a folder that is not a run folder, holds no checkpoint or a truncated one, a device
this machine lacks, an --out folder that does not exist) is one line on stderr and exit code 2,
before anything is evaluated.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from pathlib import Path

from searches import STUDIES


def main(argv: list[str] | None = None) -> int:
    prog = ("python -m engine" if Path(sys.argv[0]).name == "__main__.py"
            else Path(sys.argv[0]).name)
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    study = commands.add_parser(
        "run", help="run a study of searches/ (its flags: vae-ablations run STUDY --help)",
        description="Run one of the studies (searches/<STUDY>.py) with the engine's flags.",
        add_help=False)
    study.add_argument("study", metavar="STUDY", nargs="?",
                       help=f"one of {', '.join(STUDIES)}")
    study.add_argument("flags", nargs=argparse.REMAINDER, help="the study's flags")
    commands.add_parser("studies", help="list the studies with the first line of each")
    report = commands.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV) and plots of a finished or partial run",
        description="Write <run folder>/report/ and print the ablation table.")
    report.add_argument("run_dir", metavar="RUN_FOLDER", help="the folder a search wrote")
    st = commands.add_parser(
        "status", help="every trial of a running or finished run: row, seed, state, epochs, "
        "latest search metric, time", description="Print the run's state and a line per "
        "trial, read from the run folder alone (from another terminal, or another node on the "
        "shared storage).")
    st.add_argument("run_dir", metavar="RUN_FOLDER", help="the folder a search writes")
    ev = commands.add_parser(
        "evaluate", help="run the evaluation suite again on a trial's newest checkpoint, or on "
        "every completed trial of a run (as Ray Tasks), and merge it into the run's report",
        description="Evaluate the newest checkpoint of a trial folder (or a checkpoint "
        "folder) with the settings its search used, changed by the flags; print the metrics "
        "and write them as JSON. Given a run folder, do so for every completed trial (of "
        "--rows), each as a Ray Task, into each trial's evaluation.json, and rewrite the "
        "report with the new metrics merged into its table.")
    ev.add_argument("folder", metavar="FOLDER", help="a run folder, a trial folder of one, or "
                    "a checkpoint folder")
    ev.add_argument("--eval", help="groups, comma-separated, or all (default: the search's)")
    ev.add_argument("--fid-samples", type=int)
    ev.add_argument("--features", choices=("auto", "inception", "classifier"))
    ev.add_argument("--inception-weights", metavar="PATH")
    ev.add_argument("--data-root", help="where the data set's files are now (default: where "
                    "the run read them)")
    ev.add_argument("--device", help="cuda or cpu (default: cuda where there is one; of a "
                    "run: where its trials had GPUs)")
    ev.add_argument("--out", help="the JSON file of a trial's evaluation (default "
                    "<folder>/evaluation.json)")
    ev.add_argument("--rows", help="of a run: only these rows' trials, comma-separated (as "
                    "a search's --rows)")
    ev.add_argument("--address", help="of a run: the Ray cluster to evaluate on (HEAD:PORT "
                    "or auto; default: Ray on this machine)")
    ev.add_argument("--gpus-per-trial", type=float, help="of a run: GPUs per trial's task "
                    "(default: a trial's of the search)")
    ex = commands.add_parser(
        "export", help="write a run's best trial as a folder load_model reads without Ray",
        description="Write the best completed trial of a run (by its search metric; of a "
        "row, a seed or a trial folder where given) as "
        "model.json (config, image shape, provenance) and weights.pt (the state dict).")
    ex.add_argument("run_dir", metavar="RUN_FOLDER")
    ex.add_argument("out", metavar="OUT_FOLDER", help="a new (or empty) folder")
    ex.add_argument("--row", help="the best trial of this row (spelled as --rows takes it)")
    ex.add_argument("--seed", type=int, help="the trial of this seed (of --row)")
    ex.add_argument("--trial", metavar="TRIAL_FOLDER", help="this trial folder of the run")
    ex.add_argument("--data-root", help="where the data set's files are now, for fitting the "
                    "densities again (default: where the run read them)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # the study's own parser reads its flags (-h included)
        return _run_study(argv[1] if len(argv) > 1 else None, argv[2:], prog)
    args = p.parse_args(argv)
    if args.command == "studies":
        for name in STUDIES:
            print(f"{name:27} {_study(name).__doc__.splitlines()[0]}")
        return 0
    if args.command == "evaluate":
        from engine.reevaluate import main as evaluate  # torch (and Ray for a run): here only
        return evaluate(args)
    if args.command == "export":
        from engine.load import export_best
        try:
            trial = export_best(args.run_dir, args.out, args.row, args.seed, args.trial,
                                args.data_root)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"exported {trial} to {args.out}: engine.load.load_model({args.out!r})")
        return _log_export(args.run_dir, trial, args.out)

    if args.command in ("status", "report"):
        # imported here: other commands may need Ray, these need only pandas and matplotlib
        from engine.report import NotARunFolder, write_report
        from engine.report.status import status_text
        try:
            print((status_text if args.command == "status" else write_report)(args.run_dir))
        except NotARunFolder as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


def _study(name: str):
    return importlib.import_module(f"searches.{name}")


def _run_study(name: str | None, flags: list[str], prog: str) -> int:
    """`run STUDY FLAGS`: the study's own main, with the flags as its command line."""
    usage = (f"usage: {prog} run STUDY [flags]; STUDY one of {', '.join(STUDIES)} ({prog} "
             f"studies lists them; {prog} run STUDY --help, their flags)")
    if name in ("-h", "--help"):
        print(usage)
        return 0
    if name is None:
        print(f"error: no study named; {usage.removeprefix('usage: ')}", file=sys.stderr)
        return 2
    if name not in STUDIES:
        near = difflib.get_close_matches(name, STUDIES, n=1)
        print(f"error: no study {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; "
              f"one of {', '.join(STUDIES)}", file=sys.stderr)
        return 2
    os.environ["VAE_ABLATIONS_PROG"] = f"{prog} run {name}"  # its usage lines' name
    return _study(name).main(flags)


def _log_export(run_dir: str, trial: Path, out: str) -> int:
    """An export of a run tracked with MLflow goes to its trial's MLflow run too, under
    model/ (engine/run/mlflow_store.py); the export stands where MLflow cannot take it."""
    from engine.run.types import RunSpec
    if "mlflow" not in RunSpec.from_json(json.loads(Path(run_dir, "search.json").read_text())
                                         ).trackers:
        return 0
    try:
        from engine.run.mlflow_store import log_export
        run_id = log_export(run_dir, trial, out)
    except Exception as e:  # noqa: BLE001  (mlflow not installed here, a server away, ...)
        print(f"note: not logged to MLflow: {type(e).__name__}: {e}", file=sys.stderr)
        return 0
    print(f"logged to MLflow run {run_id} under model/" if run_id else
          f"note: {trial.name} has no MLflow run to log the export to", flush=True)
    return 0


def cli() -> None:
    """The console script's entry (pyproject.toml): main's code, the interpreter's teardown
    skipped (engine/run/console.py exit_with)."""
    from engine.run.console import exit_with
    exit_with(main())


if __name__ == "__main__":
    cli()
