"""The training step on the device at hand: step time and achieved TFLOP/s (fp32, bf16), host
reads per batch against the loop before, device memory per trial and how many trials fit.

On a GPU: the paper's conv64 autoencoder (UAE's, 3x64x64 as CelebA-64) at batch 64. Without
one it runs on this CPU, smaller (conv32 at 3x32x32, batch 4, fewer steps), and says so: the
CPU figures check that the script runs (tests/test_benchmarks.py runs it with --quick), they
are not GPU figures.

Two ratios, each interleaved (A B A B ..., the median of the pairwise ratios, so load drift
does not decide them):
  the loop now (fused Adam, nothing read back per batch, uint8 images converted a batch at a
  time, channels_last on a GPU) over the baseline, the loop before 62321ba (float images, an
  .item() per loss term and a finiteness check before each step, unfused Adam);
  bf16 over fp32 (--precision bf16: the networks under autocast).
And, where several GPUs are visible (or --ddp-cpu N asks for N CPU processes over gloo, which
checks the code, not the speed), the DDP speed-up: an epoch of the same data and global batch
on one worker over W workers (the trial loop's rank::world split, NCCL on GPUs), ideally W.

    python benchmarks/gpu.py [--quick] [--ddp-cpu N]
"""
import argparse
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402
from engine.host_reads import HostReads  # noqa: E402
from engine.run.trial import train_epoch  # noqa: E402

# dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (SXM figures unless the
# name says PCIe/NVL), matched in this order against torch's device name (so "H100 PCIe"
# before "H100", "L40S" before "L4"); None: no published figure (AWS's A10G, which "A10"
# would otherwise match), and a device not listed prints no fraction of a peak
PEAK_BF16 = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
             ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", None), ("A10", 125.0))


def peak_bf16(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16 if k in name), None)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_epoch_time(rank: int, world: int, port: int, cuda: bool, shape, batch: int,
                   steps: int, out: str) -> None:
    """One process of W: the trial loop's DDP path (engine/run/ray_backend/trainables.py _ddp_worker
    without Ray) over the same uint8 images and global batch as one worker; rank 0 writes the
    median of three timed epochs (after one to warm up) to `out`."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            init_method=f"tcp://127.0.0.1:{port}")
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    else:
        torch.set_num_threads(1)  # W CPU processes share the machine's cores
    torch.manual_seed(0)
    cfg = models.PRESETS["UAE"].replace(batch_size=batch)
    model = models.build(cfg, shape).place(dev)
    net = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = model.make_optimizer()
    images = torch.randint(0, 256, (batch * steps, *shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(dev)

    def all_reduce(t):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)

    times = []
    for _ in range(4):
        dist.barrier()
        if cuda:
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        train_epoch(net, opt, images, batch, torch.Generator().manual_seed(0), rank, world,
                    all_reduce, device=dev)
        if cuda:
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(str(statistics.median(times[1:])))
    dist.destroy_process_group()


def ddp_speedup(world: int, cuda: bool, shape, batch: int, steps: int) -> tuple[float, float]:
    """(epoch time on 1 worker, on `world` workers), each in processes of its own."""
    import torch.multiprocessing as mp
    took = []
    for w in (1, world):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "time")
            mp.spawn(ddp_epoch_time, args=(w, _free_port(), cuda, shape, batch, steps, out),
                     nprocs=w, join=True)
            took.append(float(Path(out).read_text()))
    return took[0], took[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and pairs (CI)")
    p.add_argument("--ddp-cpu", type=int, default=0, metavar="N",
                   help="without GPUs, run the DDP measurement over N CPU processes (gloo)")
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
    # the baseline took float images; the loop now takes the data sets' uint8 codes
    codes = torch.randint(0, 256, (batch * steps, *shape), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)).to(dev)
    images = codes.float() / 255

    def sync():
        if gpu:
            torch.cuda.synchronize(dev)

    def fresh(fused: bool = True):
        torch.manual_seed(0)
        model = models.build(cfg, shape).place(dev)
        opt = (model.make_optimizer() if fused else
               torch.optim.Adam(model.param_groups(), lr=cfg.lr))
        return model, opt

    def timed(epoch, model, opt, precision="fp32") -> float:
        data = images if epoch is baseline_epoch else codes
        sync()
        start = time.perf_counter()
        with model.compute_in(precision):
            epoch(model, opt, data, batch, torch.Generator().manual_seed(0))
        sync()
        return (time.perf_counter() - start) / steps

    runs = {"baseline": (baseline_epoch, *fresh(False)), "now": (train_epoch, *fresh())}
    low = {"fp32": (train_epoch, *fresh()), "bf16": (train_epoch, *fresh())}
    for epoch, model, opt in (*runs.values(), *low.values()):  # warm-up: kernels, allocator
        timed(epoch, model, opt)
    reads = {}
    for key, (epoch, model, opt) in runs.items():
        with HostReads() as r:
            epoch(model, opt, images if key == "baseline" else codes, batch,
                  torch.Generator().manual_seed(0))
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
            train_epoch(model, opt, codes[:batch], batch, torch.Generator().manual_seed(0))
        t = statistics.median(prec[precision])
        tflops = flops.get_total_flops() / t / 1e12
        peak = peak_bf16(name) if gpu else None
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
        free, total = torch.cuda.mem_get_info(dev)
        # what this process holds beyond torch's allocator: the CUDA context, cuBLAS/cuDNN
        # workspaces (an estimate that assumes no other process on the GPU)
        context = max(0, total - free - torch.cuda.memory_reserved(dev))
        per_trial = peak + context
        print(f"device memory per trial: {peak / 2**30:.2f} GiB model, Adam and activations "
              f"+ {context / 2**30:.2f} GiB CUDA context = {per_trial / 2**30:.2f} GiB (the "
              f"data not counted: at --gpus-per-trial 0.125 a CelebA-64 trial keeps it on the "
              f"host); {int(total // per_trial)} trials fit in {total / 2**30:.0f} GiB; "
              f"--gpus-per-trial 0.125 {'fits' if per_trial <= total / 8 else 'does not fit'}")
    world = torch.cuda.device_count() if gpu else args.ddp_cpu
    if world > 1:
        one, many = ddp_speedup(world, gpu, shape, batch, steps)
        over = "GPUs" if gpu else "CPU processes (gloo: this checks the code, not the speed)"
        print(f"DDP over {world} {over}: epoch {one * 1e3:.1f} ms on 1 worker, "
              f"{many * 1e3:.1f} ms on {world}; speed-up = {one / many:.3f} (ideal {world})")
    if not gpu:
        print("no GPU: device memory and trials per GPU are not measured"
              + ("" if world > 1 else ", nor the DDP speed-up (--ddp-cpu N runs its code)"))
    elif world < 2:
        print("one GPU visible: the DDP speed-up is not measured")


if __name__ == "__main__":
    main()
