"""What a trial's end costs with its ex-post density fitted once, against fitting it twice,
measured in one run.

A 2-Stage VAE (Dai & Wipf) on digits, trained for a few epochs, then its final evaluation
(FIDs of prior and second-stage samples) and its TensorBoard grids, two ways, interleaved
(A B A B ..., the median of the pairwise ratios, so load drift does not decide it):
  A, the baseline (the engine before): the board fits the second stage again for its grid;
  B, now: the board decodes the first 32 of the latents the evaluation sampled.

    python benchmarks/trial_end.py [--quick]   # --quick: one pair, a 128-wide second stage
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import models  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.run.spec import TrialSpec  # noqa: E402
from engine.eval.evaluate import EvalSettings, evaluate  # noqa: E402
from engine.eval.tensorboard import TrialBoard  # noqa: E402
from engine.run.trial import train_epoch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)  # as a one-CPU trial runs
    pairs, hidden = (1, 128) if args.quick else (3, 1024)
    data = load_dataset("digits")
    cfg = models.PRESETS["2-Stage-VAE"].replace(second_stage_hidden=hidden)
    torch.manual_seed(0)
    model = models.build(cfg, data.image_shape)
    opt = model.make_optimizer()
    for _ in range(5):
        train_epoch(model, opt, data.train.images, cfg.batch_size, torch.Generator().manual_seed(0))
    model.eval()
    settings = EvalSettings(metrics=("fid",), densities=("prior", "second_stage"),
                            fid_samples=2_000)
    spec = TrialSpec.from_params({"label": "2-Stage-VAE", "seed": 0, "config": cfg.to_dict(),
                                  "dataset": "digits", "epochs": 5, "metric": "val/mse",
                                  "mode": "min"})

    def trial_end(reuse: bool) -> float:
        with tempfile.TemporaryDirectory() as folder:
            board = TrialBoard(folder, spec, data, 1)
            start = time.perf_counter()
            drawn: dict = {}
            evaluate(model, data, settings=settings, seed=0, drawn=drawn)
            board._density_samples(model, 1, drawn if reuse else {})
            took = time.perf_counter() - start
            board.close()
        return took

    trial_end(True)  # the classifier and the reference statistics, cached for both
    times = {"A": [], "B": []}
    for _ in range(pairs):
        times["A"].append(trial_end(False))
        times["B"].append(trial_end(True))
    ratio = statistics.median(b / a for a, b in zip(times["A"], times["B"]))
    print(f"2-Stage VAE on digits, second stage {hidden} wide, {cfg.second_stage_epochs} "
          f"epochs, 2,000 FID samples; {pairs} interleaved pair(s)")
    print(f"A (board fits the density again): {', '.join(f'{t:.1f}' for t in times['A'])} s")
    print(f"B (board reuses the evaluation's samples): "
          f"{', '.join(f'{t:.1f}' for t in times['B'])} s")
    print(f"B / A = {ratio:.3f} (median of the pairwise ratios)")


if __name__ == "__main__":
    main()
