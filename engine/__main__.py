"""The engine's command line.

    python -m engine report runs/ablation_uae    # write runs/ablation_uae/report/, print the table
    python -m engine evaluate runs/ablation_uae/UAE_seed0_...   # evaluate a trial's checkpoint

Bad input (a folder that is not a run folder, or holds no checkpoint) is one line on stderr
and exit code 2.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV) and plots of a finished or partial run",
        description="Write <run folder>/report/ and print the ablation table.")
    report.add_argument("run_dir", metavar="RUN_FOLDER", help="the folder a search wrote")
    ev = commands.add_parser(
        "evaluate", help="run the evaluation suite on a trial's newest checkpoint",
        description="Evaluate the newest checkpoint in a trial folder (or a checkpoint folder) "
        "with the settings its search used, changed by the flags; print the metrics and write "
        "them as JSON.")
    ev.add_argument("folder", metavar="TRIAL_FOLDER")
    ev.add_argument("--eval", help="groups, comma-separated, or all")
    ev.add_argument("--fid-samples", type=int)
    ev.add_argument("--features", choices=("auto", "inception", "classifier"))
    ev.add_argument("--inception-weights", metavar="PATH")
    ev.add_argument("--data-root", help="where the data set's files are now (default: where "
                    "the run read them)")
    ev.add_argument("--device", help="cuda or cpu (default: cuda where there is one)")
    ev.add_argument("--out", help="the JSON file (default <folder>/evaluation.json)")
    args = p.parse_args(argv)
    if args.command == "evaluate":
        return _evaluate(args)

    if args.command == "report":
        # imported here: other commands may need Ray, a report needs only pandas and matplotlib
        from engine.report import NotARunFolder, write_report
        try:
            print(write_report(args.run_dir))
        except NotARunFolder as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


def _evaluate(args) -> int:
    from pathlib import Path

    import torch

    import models
    from engine.data import apply_options, load_dataset
    from engine.evaluate import EvalSettings, evaluate, parse_groups
    from engine.files import write_json_atomic
    from engine.trial import load_state, newest_state

    folder = Path(args.folder)
    # a checkpoint folder is Tune's to replace: what the evaluation writes goes to its trial
    trial_dir = folder.parent if (folder / "state.pt").is_file() else folder
    try:
        state = (load_state(str(folder)) if (folder / "state.pt").is_file()
                 else newest_state(str(folder)) or newest_state(str(folder / "ddp")))
    except Exception as e:  # noqa: BLE001  (an unreadable checkpoint)
        print(f"error: {folder}: the checkpoint cannot be read: {e}", file=sys.stderr)
        return 2
    if state is None:
        print(f"error: {folder} holds no checkpoint (checkpoint_*/state.pt); pass a trial "
              "folder of a run", file=sys.stderr)
        return 2
    params = state["params"]
    changes = {k: getattr(args, k) for k in ("fid_samples", "features", "inception_weights")
               if getattr(args, k) is not None}
    if args.eval:
        changes["metrics"] = parse_groups(args.eval)
    try:
        settings = EvalSettings.from_dict(params.get("evaluation")).replace(**changes)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        data = apply_options(load_dataset(params["dataset"],
                                          args.data_root or params.get("data_root")),
                             params.get("data"))  # the row's noise, if any
    except ValueError as e:  # DataNotFound, DataError: one line naming the file
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = models.build(models.resolve(params["config"]), data.image_shape)
    model.load_state_dict(state["model"])
    model.to(device)
    out = evaluate(model, data, device, settings, seed=params["seed"], out_dir=trial_dir)
    out = {"epoch": state["epoch"], "settings": settings.to_dict(), **out}
    path = Path(args.out) if args.out else trial_dir / "evaluation.json"
    write_json_atomic(path, out)
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k} = {v:.6g}")
    for k, why in out["notes"].items():
        print(f"{k}: {why}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
