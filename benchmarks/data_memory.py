"""A trial's private host memory for its data set: the uint8 memory map of now against the
float32 copies of before, measured in one run.

An MNIST-sized data set in MNIST's own file format (random pixels: what is measured is the
memory, not the values) is decoded into a fresh cache once; then fresh processes, interleaved
(A B A B ...), each load it and read one epoch of shuffled training batches as a trial does:
  A, the baseline (the engine before): every split converted to float32 tensors of its own;
  B, now: every split the cache's uint8 .npy mapped copy-on-write, each batch converted.
A process's private memory is its anonymous memory (/proc/self/smaps_rollup "Anonymous",
after its imports): the mapped file's pages are the page cache's, one copy per machine that
every trial on it shares, and the figures print them apart ("file-backed").

    python benchmarks/data_memory.py [--quick]   # --quick: 7,000 images, one pair
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

MB = 1e6


def memory() -> dict[str, float]:
    """Anonymous and file-backed resident memory of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024 / MB
    return {"anonymous": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


def write_mnist(root: Path, n_train: int, n_test: int) -> None:
    """MNIST's four IDX files (uncompressed), random pixels and labels."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, shape in (("train-images-idx3-ubyte", (n_train, 28, 28)),
                        ("t10k-images-idx3-ubyte", (n_test, 28, 28)),
                        ("train-labels-idx1-ubyte", (n_train,)),
                        ("t10k-labels-idx1-ubyte", (n_test,))):
        arr = rng.integers(0, 10 if len(shape) == 1 else 256, shape, dtype=np.uint8)
        header = (0x800 + arr.ndim).to_bytes(4, "big") + b"".join(
            d.to_bytes(4, "big") for d in arr.shape)
        (raw / name).write_bytes(header + arr.tobytes())


def child(mode: str, root: str) -> None:
    """One trial's data: load, hold, read an epoch of batches; print the memory it took."""
    import torch
    import models
    from engine.data import load_dataset
    # torchvision (~90 MB of code, not data), which the real readers import on first use
    from engine.data.real import files, readers  # noqa: F401
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # random files are not the official ones: it says so
    before = memory()
    ds = load_dataset("mnist", root=root)
    splits = [ds.train, ds.val, ds.test]
    if mode == "baseline":  # the baseline: a float32 copy of every split per trial
        held = [s.float() for s in splits]
    else:
        held = [s.images for s in splits]
    train = held[0]
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(())
    order = torch.randperm(len(train), generator=gen)
    for i in range(0, len(train), 64):
        total += models.float_images(train[order[i:i + 64]]).sum()  # a batch, as a trial reads
    after = memory()
    print(json.dumps({k: after[k] - before[k] for k in after} | {"images": len(train)}))


def run(mode: str, root: Path, cache: Path) -> dict:
    env = {"VAE_ABLATIONS_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(root)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("MODE", "ROOT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    (n_train, n_test), pairs = ((6_000, 1_000), 1) if args.quick else ((60_000, 10_000), 3)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        write_mnist(root, n_train, n_test)
        run("now", root, cache)  # decodes into the cache once, as the first trial would
        results = {"baseline": [], "now": []}
        for _ in range(pairs):
            for mode in results:
                results[mode].append(run(mode, root, cache))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("anonymous", "file")}
           for m, rs in results.items()}
    print(f"MNIST-sized, {n_train + n_test:,} images ({n_train + n_test:,} x 784 B uint8 = "
          f"{(n_train + n_test) * 784 / MB:.1f} MB), one trial, {pairs} interleaved pair(s)")
    for mode, label in (("baseline", "float32 copies (before)"), ("now", "uint8 map (now)")):
        print(f"  {label:24s} private {med[mode]['anonymous']:8.1f} MB, "
              f"file-backed {med[mode]['file']:6.1f} MB")
    ratio = med["now"]["anonymous"] / med["baseline"]["anonymous"]
    print(f"private memory now / baseline = {ratio:.3f}")


if __name__ == "__main__":
    main()
