"""The training step on the device at hand: step time and achieved TFLOP/s (fp32, bf16), host
reads per batch against the loop before, device memory per trial and how many trials fit.

On a GPU: the paper's conv64 autoencoder (UAE's, 3x64x64 as CelebA-64) at batch 64. Without
one it runs on this CPU, smaller (conv32 at 3x32x32, batch 4, fewer steps), and says so: the
CPU figures check that the script runs (tests/test_benchmarks.py runs it with --quick), they
are not GPU figures.

Two ratios, each interleaved (A B A B ..., the median of the pairwise ratios, so load drift
does not decide them):
  the loop now (fused Adam, nothing read back per batch) over the baseline, the loop before
  62321ba (an .item() per loss term and a finiteness check before each step, unfused Adam);
  bf16 over fp32 (--precision bf16: the networks under autocast).

    python benchmarks/gpu.py [--quick]
"""
import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402
from engine.host_reads import HostReads  # noqa: E402
from engine.run.trial import train_epoch  # noqa: E402

# dense bf16 tensor-core peaks, TFLOP/s (NVIDIA's data sheets); others print no fraction
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def baseline_epoch(model, opt, images, batch_size, gen) -> dict:
    """The loop before 62321ba, one worker: a host read per term per batch."""
    model.train()
    order = torch.randperm(len(images), generator=gen).to(images.device)
    sums, n = {}, 0
    for i in range(0, len(images), batch_size):
        batch = images[order[i:i + batch_size]]
        terms = model(batch)
        loss = terms["loss"].item()
        if not math.isfinite(loss):
            raise RuntimeError("diverged")
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + (loss if k == "loss" else v.item()) * len(batch)
        n += len(batch)
    return {k: v / n for k, v in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and pairs (CI)")
    args = p.parse_args()
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    batch, steps, pairs, shape = (64, 50, 5, (3, 64, 64)) if gpu else (4, 4, 3, (3, 32, 32))
    if args.quick:
        steps, pairs = min(steps, 2), 1
    name = torch.cuda.get_device_name(dev) if gpu else "no GPU: this CPU, smaller settings"
    cfg = models.PRESETS["UAE"].replace(batch_size=batch)
    arch = models.build(cfg, shape).arch
    print(f"device: {name}; {arch} UAE, {'x'.join(map(str, shape))}, batch {batch}, "
          f"{steps} steps per timing")
    images = torch.rand(batch * steps, *shape, device=dev)

    def sync():
        if gpu:
            torch.cuda.synchronize(dev)

    def fresh(fused: bool = True):
        torch.manual_seed(0)
        model = models.build(cfg, shape).to(dev)
        opt = (model.make_optimizer() if fused else
               torch.optim.Adam(model.param_groups(), lr=cfg.lr))
        return model, opt

    def timed(epoch, model, opt, precision="fp32") -> float:
        sync()
        start = time.perf_counter()
        with model.compute_in(precision):
            epoch(model, opt, images, batch, torch.Generator().manual_seed(0))
        sync()
        return (time.perf_counter() - start) / steps

    runs = {"baseline": (baseline_epoch, *fresh(False)), "now": (train_epoch, *fresh())}
    low = {"fp32": (train_epoch, *fresh()), "bf16": (train_epoch, *fresh())}
    for epoch, model, opt in (*runs.values(), *low.values()):  # warm-up: kernels, allocator
        timed(epoch, model, opt)
    reads = {}
    for key, (epoch, model, opt) in runs.items():
        with HostReads() as r:
            epoch(model, opt, images, batch, torch.Generator().manual_seed(0))
        reads[key] = r.count / steps
    loop = {"baseline": [], "now": []}
    prec = {"fp32": [], "bf16": []}
    for _ in range(pairs):
        for key, run in runs.items():
            loop[key].append(timed(*run))
        for key, (epoch, model, opt) in low.items():
            prec[key].append(timed(epoch, model, opt, key))

    def ratio(d, a, b):
        return statistics.median(y / x for x, y in zip(d[a], d[b]))

    print(f"host reads per batch: baseline {reads['baseline']:.1f}, now {reads['now']:.1f}")
    print(f"step time: baseline {statistics.median(loop['baseline']) * 1e3:.1f} ms, now "
          f"{statistics.median(loop['now']) * 1e3:.1f} ms; now / baseline = "
          f"{ratio(loop, 'baseline', 'now'):.3f}")
    model, opt = fresh()
    for precision in ("fp32", "bf16"):
        with FlopCounterMode(display=False) as flops, model.compute_in(precision):
            train_epoch(model, opt, images[:batch], batch, torch.Generator().manual_seed(0))
        t = statistics.median(prec[precision])
        tflops = flops.get_total_flops() / t / 1e12
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        share = f", {tflops / peak:.1%} of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
        print(f"{precision}: {t * 1e3:.1f} ms a step, {flops.get_total_flops() / 1e9:.1f} "
              f"GFLOP a step, {tflops:.2f} TFLOP/s{share}")
    print(f"bf16 / fp32 step time = {ratio(prec, 'fp32', 'bf16'):.3f}")
    if gpu:
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)  # the benchmark's own images and models
        model, opt = fresh()
        timed(train_epoch, model, opt)
        peak = torch.cuda.max_memory_allocated(dev) - base
        total = torch.cuda.get_device_properties(dev).total_memory
        print(f"device memory per trial (model, Adam, activations; data not counted): "
              f"{peak / 2**30:.2f} GiB; {int(total // peak)} trials fit in "
              f"{total / 2**30:.0f} GiB; --gpus-per-trial 1/8 "
              f"{'fits' if peak <= total / 8 else 'does not fit'}")
        if torch.cuda.device_count() > 1:
            print(f"{torch.cuda.device_count()} GPUs visible: the DDP speed-up is not measured "
                  "here; time a search with --workers-per-trial")
    else:
        print("no GPU: device memory, trials per GPU and the DDP speed-up are not measured")


if __name__ == "__main__":
    main()
