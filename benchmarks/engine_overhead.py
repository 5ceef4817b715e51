"""What the engine costs, and what ASHA saves, measured in one run on this machine.

    python benchmarks/engine_overhead.py            # ~4 min on 2 cores
    python benchmarks/engine_overhead.py --quick    # smaller budget, for a look
    python benchmarks/engine_overhead.py --step     # part 5 alone, ~1 min

Prints four ratios against the baselines they name (issue 3's goals in brackets):
1. start-up of a one-worker trial under Tune: from Tune starting the trial to its first
   result, minus that epoch's own compute; median over the trials of the default search
   [<= 1 s];
2. time per epoch through the engine (train, validate, report, checkpoint, TensorBoard)
   over a plain PyTorch loop (train_epoch + validation) on the same model, data and seed,
   one trial at a time, with a checkpoint every epoch, every 5 and by time (the default, 5m)
   [<= 1.05]; engine and loop interleaved (E L E L E L, one thread each), the median of the
   pairwise ratios, so that load drift does not decide it (one after the other, it once
   printed 0.755: the engine "faster" than the loop);
3. epochs ASHA spends on the ablation_uae grid over the full grid's, and whether ASHA keeps
   the full grid's best row (lowest mean final val/mse over seeds) [<= 1/3, kept];
4. wall time of the default `python searches/ablation_uae.py` [< 600 s];
5. a training step's arithmetic rate over the same process's fp32 GEMM rate (issue 29, goal 3:
   >= 0.5 at batch 64 for the default MLP): each ablation_uae row on MNIST-5k at its batch
   size, one thread, train_epoch's steps (batch conversion, forward, backward, fused Adam) timed
   over whole epochs, their FLOPs counted by torch.utils.flop_counter (the matmuls' 2mnk, as
   a GEMM's rate counts them), against a 256x1024x1024 matmul timed in the same process,
   interleaved (G S G S ...), the median of the pairwise ratios; beside it the share of the
   step that its matrix products take (torch.profiler's self CPU time of aten::mm, addmm, bmm
   over one more epoch), so ratio / share bounds what removing every other cost could reach.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from ray import tune  # noqa: E402

import models  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.data.registry import embedded_arch  # noqa: E402
from engine.eval.evaluate import reconstruction_mse  # noqa: E402
from engine.report import load_trials  # noqa: E402
from engine.run import run  # noqa: E402
from engine.run.types import Row  # noqa: E402
from models.decoder_regs import POWER_WARMUP_STEPS  # noqa: E402
from engine.run.trial import train_epoch  # noqa: E402
from searches.ablation_uae import SEARCH  # noqa: E402


class Timer(tune.Callback):
    """Driver-side clock of each trial's start and results."""

    def __init__(self):
        self.start, self.results = {}, defaultdict(list)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start[trial.trial_id] = time.perf_counter()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results[trial.trial_id].append((time.perf_counter(), result))

    def startups(self) -> list[float]:
        return [res[0][0] - self.start[t] - res[0][1]["time/epoch_s"]
                for t, res in self.results.items() if t in self.start and res]

    def epoch_periods(self) -> list[float]:
        return [b[0] - a[0] for res in self.results.values() for a, b in zip(res, res[1:])]


def search(argv, out: Path) -> tuple[Timer, float]:
    timer = Timer()
    t0 = time.perf_counter()
    code = run(SEARCH, [*argv, "--out", str(out)], callbacks=(timer,))
    if code != 0:
        sys.exit(f"the search {argv} exited with {code}")
    return timer, time.perf_counter() - t0


def plain_loop_epoch(preset: str, dataset: str, epochs: int) -> float:
    """Median seconds per epoch of the bare loop: train_epoch + validation MSE."""
    torch.set_num_threads(1)  # as the trial (1 CPU per trial)
    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = models.build(preset, data.image_shape)
    opt, gen = model.make_optimizer(), torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_epoch(model, opt, data.train.images, model.cfg.batch_size, gen)
        reconstruction_mse(model, data.val.images)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def step_rates(epochs: int = 3, rows=None) -> dict[str, tuple[float, float, float, float]]:
    """Part 5: row -> (ms per step, step GFLOP/s, the ratio to the GEMM rate, the matrix
    products' share of the step's time)."""
    from torch.profiler import profile
    from torch.utils.flop_counter import FlopCounterMode
    torch.set_num_threads(1)  # as a trial (1 CPU per trial)
    data = load_dataset("mnist5k")
    a, b = torch.randn(256, 1024), torch.randn(1024, 1024)

    def gemm_rate() -> float:  # GFLOP/s of a 256x1024x1024 fp32 matmul, best of 20
        best = math.inf
        for _ in range(20):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return 2 * 256 * 1024 * 1024 / best / 1e9

    out = {}
    for label in rows or list(SEARCH.rows):
        cfg = _config(label)
        torch.manual_seed(0)
        model = models.build(cfg, data.image_shape)
        opt, gen = model.make_optimizer(), torch.Generator().manual_seed(0)
        x = models.float_images(data.train.images[:cfg.batch_size], torch.device("cpu"))
        with FlopCounterMode(display=False) as counter:  # one step's forward and backward
            model.loss(x)["loss"].backward()
        opt.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
        steps = len(data.train.images) // cfg.batch_size
        # warm-up, past the steps whose power-iteration vector is still the SVD's (RAE-L2)
        for _ in range(math.ceil(POWER_WARMUP_STEPS / steps) + 1):
            train_epoch(model, opt, data.train.images, cfg.batch_size, gen)
        ratios, times = [], []
        for _ in range(epochs):
            g = gemm_rate()
            t0 = time.perf_counter()
            train_epoch(model, opt, data.train.images, cfg.batch_size, gen)
            t = (time.perf_counter() - t0) / steps
            times.append(t)
            ratios.append(flops / t / 1e9 / g)
        t = statistics.median(times)
        with profile() as prof:
            train_epoch(model, opt, data.train.images, cfg.batch_size, gen)
        events = prof.key_averages()
        share = (sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
                 / sum(e.self_cpu_time_total for e in events))
        out[label] = (t * 1e3, flops / t / 1e9, statistics.median(ratios), share)
    return out


def print_step_rates(rates) -> None:
    for label, (ms, gflops, ratio, share) in rates.items():
        print(f"5. step of {label} (batch {_config(label).batch_size}, MNIST-5k, one thread): "
              f"{ms:.2f} ms, {gflops:.1f} GFLOP/s -> {ratio:.2f} of the GEMM rate (goal >= "
              f"0.5); its matrix products {share:.0%} of the step (so at most {ratio / share:.2f} "
              "without any other cost)")


def _config(label: str) -> models.Config:
    """The study's row as its trials train it on MNIST-5k (arch "auto": the MLP)."""
    row = Row.of(SEARCH.rows[label])
    return embedded_arch(models.resolve(row.preset, **row.fields), "mnist5k")


def best_row(trials) -> str:
    done = trials[trials["status"] == "completed"]
    return done.groupby("label")["val/mse"].mean().idxmin()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 epochs, 2 seeds, one pair")
    p.add_argument("--step", action="store_true", help="part 5 alone")
    args = p.parse_args()
    if args.step:
        print_step_rates(step_rates())
        return
    epochs, seeds = (10, 2) if args.quick else (30, 3)
    pairs = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    budget = ["--epochs", str(epochs), "--seeds", str(seeds)]

    full, full_wall = search(budget, work / "full")
    asha, _ = search([*budget, "--scheduler", "asha"], work / "asha")
    # one trial at a time, as the plain loop runs: a tiny epoch (digits) and a longer one
    overhead = {}
    for preset, dataset, n, every in (("UAE", "digits", 30, "1"), ("UAE", "digits", 30, "5"),
                                      ("UAE", "digits", 30, "5m"), ("VAE", "patches", 5, "1")):
        engine, plain = [], []
        for k in range(pairs):
            timer, _ = search(["--rows", preset, "--dataset", dataset, "--seeds", "1",
                               "--epochs", str(n), "--max-concurrent", "1",
                               "--checkpoint-every", every],
                              work / f"overhead-{dataset}-{every}-{k}")
            engine.append(statistics.median(timer.epoch_periods()))
            plain.append(plain_loop_epoch(preset, dataset, n))
        overhead[preset, dataset, every] = (engine, plain)

    startups = full.startups()
    t_full, t_asha = load_trials(work / "full"), load_trials(work / "asha")
    e_full, e_asha = t_full["epochs_done"].sum(), t_asha["epochs_done"].sum()
    kept = best_row(t_full) == best_row(t_asha)
    done = t_full[t_full["status"] == "completed"].groupby("label")["val/mse"]
    gap = done.mean()[best_row(t_asha)] - done.mean()[best_row(t_full)]
    spread = done.std()[best_row(t_full)]

    print(f"\n== engine benchmark ({epochs} epochs x {seeds} seeds x {len(SEARCH.rows)} rows, "
          f"digits, 2 cores; run folders in {work})")
    print(f"1. trial start-up under Tune: median {statistics.median(startups):.3f} s, max "
          f"{max(startups):.2f} s over {len(startups)} trials (the first starts the worker "
          f"processes) -> {statistics.median(startups) / 1.0:.2f} x the 1 s goal")
    for (preset, dataset, every), (engine, plain) in overhead.items():
        ratio = statistics.median(e / p for e, p in zip(engine, plain))
        print(f"2. time per epoch, {preset} on {dataset}, --checkpoint-every {every}: engine "
              f"{', '.join(f'{e * 1e3:.1f}' for e in engine)} ms, plain loop "
              f"{', '.join(f'{p * 1e3:.1f}' for p in plain)} ms -> ratio {ratio:.3f} (median "
              f"of {len(engine)} interleaved pair(s); goal <= 1.05), "
              f"{statistics.median(e - p for e, p in zip(engine, plain)) * 1e3:+.1f} ms per "
              "epoch")
    print(f"3. ASHA: {e_asha} of the full grid's {e_full} epochs -> ratio "
          f"{e_asha / e_full:.3f} (goal <= 0.333); best row full grid {best_row(t_full)!r}, "
          f"ASHA {best_row(t_asha)!r} -> {'kept' if kept else 'NOT kept'}; in the full grid "
          f"they differ by {gap:.2g} in mean final val/mse, against a seed std of {spread:.2g}")
    print(f"4. default search wall time: {full_wall:.0f} s -> {full_wall / 600:.2f} x the "
          f"10 min goal")
    print_step_rates(step_rates())


if __name__ == "__main__":
    main()
