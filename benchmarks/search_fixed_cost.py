"""A search's fixed cost (issue 29, goal 4: at most 8 s): the wall time of a 1-trial, 1-epoch,
`--eval none` search (ablation_uae's UAE row, one seed, on the 8x8 digits) minus its trial's own
time, Tune's `time_total_s` in the trial's result.json (from the trainable's start to its last
report), measured in one run against a named baseline.

Each search is a fresh process, as `python searches/ablation_uae.py --rows UAE --seeds 1
--epochs 1 --eval none --dataset digits` runs; this script starts it through its own `--child`
mode, which times the pipeline's steps from outside (wrapping engine.run.search's functions by
name, so the same hooks time any checkout):
  start + imports   the interpreter's start and the study's imports (torch, the engine, ...);
  prepare           the flags checked, the rows built, the run folder claimed;
  ray.init          importing the engine's Ray package and starting Ray (connect);
  trial start       from Ray's start to Tune's trial start: Tune's set-up, the trial's actor
                    (a Ray worker process, the engine's imports there);
  in trial          from the trial's start to Tune's hearing its last result, less its own
                    time_total_s;
  experiment end    from that last result to the experiment's end (Tune's clean-up);
  report            the report's tables and plots;
  exit              from the report's end to the process's, as the study script ends it
                    (engine.run.exit_with where the checkout has it, else sys.exit).

The baseline is `--baseline-repo PATH`, a checkout of the engine before these changes (e.g.
`git worktree add /tmp/main main`), timed interleaved with this checkout (A B A B ...), and
the ratio is the median of the pairwise ratios of the fixed costs:

    python benchmarks/search_fixed_cost.py --baseline-repo /tmp/main [--runs 3] [--quick]
    # --quick: one pair; without --baseline-repo only this checkout, no ratio
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCH = ["--rows", "UAE", "--seeds", "1", "--epochs", "1", "--eval", "none",
          "--dataset", "digits"]
PHASES = ("start + imports", "prepare", "ray.init", "trial start", "in trial", "experiment end",
          "report", "exit")


def child(stamps_file: str, argv: list[str]) -> int:
    """Run the study as its script does, writing the pipeline's timestamps to `stamps_file`."""
    stamps = {"child": time.time()}
    import importlib
    study = importlib.import_module("searches.ablation_uae")
    stamps["imported"] = time.time()
    from engine.run import search

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            stamps.setdefault(f"{name}<", time.time())
            try:
                return fn(*a, **kw)
            finally:
                stamps[f"{name}>"] = time.time()
        return wrapper
    for name in ("prepare", "connect", "_finish"):
        setattr(search, name, timed(name, getattr(search, name)))
    execute = timed("_execute", search._execute)

    def with_timer(spec, out, resuming, ray_backend, callbacks):
        from ray import tune  # by now the engine has imported Ray

        class Timer(tune.Callback):  # when Tune starts the trial and hears its last result
            def on_trial_start(self, iteration, trials, trial, **info):
                stamps.setdefault("trial start", time.time())

            def on_trial_result(self, iteration, trials, trial, result, **info):
                stamps["last result"] = time.time()
        return execute(spec, out, resuming, ray_backend, [*callbacks, Timer()])
    search._execute = with_timer
    try:
        return study.main(argv)
    finally:
        stamps["returned"] = time.time()
        Path(stamps_file).write_text(json.dumps(stamps))


def one_search(repo: Path, folder: Path) -> dict[str, float]:
    """One search in a fresh process with `repo`'s engine: its phases in seconds, its wall
    time and its trial's own time."""
    out, stamps_file = folder / "run", folder / "stamps.json"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    start = time.time()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                           str(stamps_file), "--", *SEARCH, "--out", str(out)],
                          cwd=folder, env=env, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the search with {repo} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    s = json.loads(stamps_file.read_text())
    result = [json.loads(line) for line in
              Path(glob.glob(str(out / "*" / "result.json"))[0]).read_text().splitlines()][-1]
    trial = result["time_total_s"]
    return {"wall": end - start, "trial": trial, "fixed": end - start - trial,
            "start + imports": s["imported"] - start, "prepare": s["prepare>"] - s["imported"],
            "ray.init": s["connect>"] - s["prepare>"],
            "trial start": s["trial start"] - s["connect>"],
            "in trial": s["last result"] - s["trial start"] - trial,
            "experiment end": s["_execute>"] - s["last result"],
            "report": s["_finish>"] - s["_execute>"], "exit": end - s["_finish>"]}


def show(name: str, runs: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    fixed = ", ".join(f"{r['fixed']:.2f}" for r in runs)
    print(f"{name}: fixed cost {fixed} s "
          f"(median {med['fixed']:.2f} s; wall {med['wall']:.2f} s, trial {med['trial']:.2f} s)")
    print("  " + "; ".join(f"{k} {med[k]:.2f}" for k in PHASES) + " s (medians)")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        code = child(sys.argv[2], sys.argv[4:])
        from engine.run import console  # the study script's own end, where the checkout has it
        getattr(console, "exit_with", sys.exit)(code)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-repo", type=Path, help="a checkout of the engine to compare with")
    p.add_argument("--runs", type=int, default=3, help="searches per checkout (3)")
    p.add_argument("--quick", action="store_true", help="one search per checkout")
    args = p.parse_args()
    runs = 1 if args.quick else args.runs
    repos = {"now": ROOT}
    if args.baseline_repo:
        repos = {"baseline": args.baseline_repo.resolve(), "now": ROOT}
    times: dict[str, list] = {name: [] for name in repos}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):  # interleaved: baseline, now, baseline, now, ...
            for name, repo in repos.items():
                folder = Path(tmp, f"{name}{i}")
                folder.mkdir()
                times[name].append(one_search(repo, folder))
    print(f"1-trial, 1-epoch --eval none search ({' '.join(SEARCH)}), {runs} run(s) each"
          + (", interleaved" if len(repos) > 1 else "") + "; fixed cost = wall - the trial's "
          "time_total_s")
    for name, repo in repos.items():
        show(f"{name} ({repo})", times[name])
    if "baseline" in times:
        ratio = statistics.median(n["fixed"] / b["fixed"]
                                  for b, n in zip(times["baseline"], times["now"]))
        print(f"fixed cost now / baseline = {ratio:.3f} (median of the pairwise ratios)")


if __name__ == "__main__":
    main()
