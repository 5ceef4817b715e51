"""The engine's command line.

    python -m engine report runs/ablation_uae    # write runs/ablation_uae/report/, print the table
    python -m engine evaluate runs/ablation_uae/UAE_seed0_...   # evaluate a trial's checkpoint

Bad input (a folder that is not a run folder, holds no checkpoint or a truncated one, a device
this machine lacks, an --out folder that does not exist) is one line on stderr and exit code 2,
before anything is evaluated.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


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
    from engine.eval.evaluate import evaluate
    from engine.files import write_json_atomic

    try:
        model, data, device, settings, state, trial_dir, path = _prepare(args)
    except ValueError as e:  # bad input, found before anything is evaluated
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = evaluate(model, data, device, settings, seed=state["params"]["seed"],
                   out_dir=trial_dir)
    out = {"epoch": state["epoch"], "settings": settings.to_dict(), **out}
    write_json_atomic(path, out)
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k} = {v:.6g}")
    for k, why in out["notes"].items():
        print(f"{k}: {why}")
    print(f"written: {path}")
    return 0


def _prepare(args) -> tuple:
    """Everything the evaluation needs, each piece checked first: an evaluation takes
    minutes, and a bad flag found only at its end (the JSON file cannot be written) would
    waste them. Raises ValueError, one line, on bad input."""
    import models
    from engine.data import apply_options, load_dataset
    from engine.eval.evaluate import EvalSettings, parse_groups

    device = _device(args.device)
    folder = Path(args.folder)
    # a checkpoint folder is Tune's to replace: what the evaluation writes goes to its trial
    trial_dir = folder.parent if (folder / "state.pt").is_file() else folder
    state = _newest_checkpoint(folder)
    params = state["params"]
    changes = {k: getattr(args, k) for k in ("fid_samples", "features", "inception_weights")
               if getattr(args, k) is not None}
    if args.eval:
        changes["metrics"] = parse_groups(args.eval)
    try:
        settings = EvalSettings.from_dict(params.get("evaluation")).replace(**changes)
    except TypeError as e:  # e.g. a setting of the wrong type in an edited params.json
        raise ValueError(f"{folder}: the evaluation settings: {e}") from None
    path = _output(args.out, trial_dir)
    data = apply_options(load_dataset(params["dataset"],  # DataNotFound: names the file
                                      args.data_root or params.get("data_root")),
                         params.get("data"))  # the row's noise, if any
    model = models.build(models.resolve(params["config"]), data.image_shape)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # weights of another architecture or data set
        raise ValueError(f"{folder}: the checkpoint's weights do not fit its own config "
                         f"({_first_line(e)}); was the trial folder's params changed?"
                         ) from None
    return model.to(device), data, device, settings, state, trial_dir, path


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


def _newest_checkpoint(folder) -> dict:
    """The state of the newest checkpoint of a trial folder (or of a checkpoint folder).

    Not engine.run.trial.newest_state, which skips a checkpoint that does not load (half-copied
    when a trial died) and so would evaluate an older epoch without saying so, or report a
    truncated file as no checkpoint at all: here the user asked for this one, so say why it
    cannot be had and which older one can."""
    from engine.run.trial import STATE_FILE, load_state

    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; pass a trial folder of a run")
    if (folder / STATE_FILE).is_file():
        files = [folder / STATE_FILE]
    else:  # a Tune trial's checkpoints, else a DDP trial's
        files = (sorted(folder.glob(f"checkpoint_*/{STATE_FILE}"))
                 or sorted(folder.glob(f"ddp/checkpoint_*/{STATE_FILE}")))
    if not files:
        raise ValueError(f"{folder} holds no checkpoint (checkpoint_*/state.pt); pass a trial "
                         "folder of a run")
    # checkpoint_000009 after checkpoint_000002: Tune numbers them with leading zeros
    newest, older = files[-1], files[-2::-1]
    try:
        state = load_state(str(newest.parent))
    except Exception as e:  # noqa: BLE001  (truncated zip, half-written or not a checkpoint)
        readable = next((f for f in older if _loads(f)), None)
        raise ValueError(
            f"{newest}: the newest checkpoint is unreadable, truncated or corrupt "
            f"({_first_line(e)}); "
            + (f"evaluate the newest readable one: python -m engine evaluate {readable.parent}"
               if readable else "no older checkpoint there loads either; rerun the trial")
        ) from None
    missing = [k for k in ("model", "params", "epoch") if k not in state] \
        if isinstance(state, dict) else ["model"]
    if missing:
        raise ValueError(f"{newest} is not a checkpoint of this engine (it has no "
                         f"{missing[0]!r}); pass a trial folder of a run")
    return state


def _loads(path) -> bool:
    from engine.run.trial import load_state
    try:
        load_state(str(path.parent))
        return True
    except Exception:  # noqa: BLE001
        return False


def _output(out: str | None, trial_dir):
    """Where the metrics' JSON goes, checked to be writable now rather than after the run."""

    path = Path(out) if out else trial_dir / "evaluation.json"
    named = f"--out {out}" if out else f"{path} (the default; choose another with --out)"
    if path.is_dir():
        raise ValueError(f"{named} is a folder; give a file name, e.g. "
                         f"{path / 'evaluation.json'}")
    if not path.parent.is_dir():
        raise ValueError(f"{named}: the folder {path.parent} does not exist; create it "
                         f"(mkdir -p {path.parent}) or write into an existing folder")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{named}: the folder {path.parent} is not writable; write into "
                         "another folder")
    return path


def _first_line(e: Exception) -> str:
    """An exception's first sentence, short: torch's messages run to paragraphs."""
    text = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
