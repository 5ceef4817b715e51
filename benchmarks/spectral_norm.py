"""RAE-L2-code's training step with the decoder layers' spectral norms by power iteration (the
preset's "spectral_norm_sum_power") and by an SVD of every layer at every step (the UAE
code's computation, "spectral_norm_sum"), each against RAE-code's step (no decoder term),
measured in one run.

The model is MNIST-5k's (28x28, the library's MLP, batch 64, Adam 1e-3, one thread), past the
power iteration's 200-step SVD warm-up; the three steps run interleaved (A B C A B C ...), each
timed over a block of steps, and the ratios are of the medians over the blocks. Issue 29's
goal: power / RAE-code <= 1.2.

    python benchmarks/spectral_norm.py [--quick]   # --quick: 5 blocks of 20 steps
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import models  # noqa: E402
from models.decoder_regs import POWER_WARMUP_STEPS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    blocks, steps = (5, 20) if args.quick else (15, 50)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    runs = {}
    for name, preset, fields in (("RAE-code", "RAE-code", {}),
                                 ("power", "RAE-L2-code", {}),
                                 ("SVD", "RAE-L2-code", {"decoder_reg": "spectral_norm_sum"})):
        torch.manual_seed(0)
        model = models.build(preset, (1, 28, 28), arch="mlp", **fields)
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))

    def step(model, opt) -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(x)["loss"].backward()
        opt.step()

    for model, opt in runs.values():  # past the warm-up, where the power iteration runs
        for _ in range(POWER_WARMUP_STEPS + 5):
            step(model, opt)
    times = {name: [] for name in runs}
    for _ in range(blocks):
        for name, (model, opt) in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(model, opt)
            times[name].append((time.perf_counter() - start) / steps)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"step (ms, median of {blocks} blocks of {steps}): "
          + ", ".join(f"{name} {v:.2f}" for name, v in ms.items()))
    print(f"power / RAE-code = {ms['power'] / ms['RAE-code']:.3f} (goal <= 1.2)")
    print(f"SVD / RAE-code = {ms['SVD'] / ms['RAE-code']:.3f}")
    print(f"SVD / power = {ms['SVD'] / ms['power']:.3f}")


if __name__ == "__main__":
    main()
