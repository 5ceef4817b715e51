"""Cost of the evaluation suite, measured in one run.

1. The Fréchet step for 2,048-d features (Inception's size): ours (one symmetric eigenvalue
   problem, the reference's square root cached) against pytorch-fid's own
   calculate_frechet_distance (scipy sqrtm of the product) on the same statistics; the ratio
   and the agreement.
2. Evaluating one trial (ablation_uae's evaluation: reconstruction + FID of reconstructions,
   GMM-10 samples and interpolations, 10,000 samples, on digits) with the data set's reference
   statistics cached against recomputing them (the classifier itself cached in both).
3. One trial's FID group on MNIST-5k (issue 29, goal 1), one thread as a trial on one CPU:
   before, features from the classifier as trained, in batches of 500 images, and KID as
   torchmetrics' poly_mmd of each subset (kid_per_subset); after, the classifier's inference
   copy (batch norms folded, channels-last: engine/eval/metrics/features.py for_inference)
   in batches of at most features.CPU_BATCH, and KID with a whole set's terms summed once
   (engine/eval/metrics/sample_quality.py kid); interleaved A B A B; the ratio of the
   medians and the FIDs' and KIDs' largest relative differences.

    python benchmarks/evaluation.py [--quick]   # --quick: 2,000 FID samples, digits in 3
"""
import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def frechet_step() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance
    from engine.eval.metrics.frechet import frechet_distance, statistics
    rng = np.random.default_rng(0)
    d = 2048
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = rng.standard_normal((4000, d)) @ mix
    fake = rng.standard_normal((4000, d)) @ (mix * 1.1) + 0.05
    ref, gen = statistics(real), statistics(fake)
    t = time.perf_counter()
    ref.with_sqrt()  # once per data set, cached with the statistics
    t_root = time.perf_counter() - t
    t = time.perf_counter()
    ours = frechet_distance(ref, gen)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = calculate_frechet_distance(ref.mu, ref.cov, gen.mu, gen.cov)
    t_theirs = time.perf_counter() - t
    print(f"Fréchet step, 2048-d: ours {t_ours:.2f} s (+ {t_root:.2f} s once per reference for "
          f"its square root), pytorch-fid {t_theirs:.2f} s, ratio ours/pytorch-fid "
          f"{t_ours / t_theirs:.3f}; FID {ours:.6f} vs {theirs:.6f}, relative difference "
          f"{abs(ours - theirs) / abs(theirs):.1e}")


def one_trial(samples: int) -> None:
    import models
    from engine.data import load_dataset
    from engine.eval.evaluate import evaluate
    from searches.ablation_uae import SEARCH
    cache = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    before = os.environ.get("VAE_ABLATIONS_CACHE")
    os.environ["VAE_ABLATIONS_CACHE"] = str(cache)
    try:
        data = load_dataset("digits")
        torch.manual_seed(0)
        model = models.build("UAE", data.image_shape)
        settings = SEARCH.evaluation.replace(fid_samples=samples)
        evaluate(model, data, torch.device("cpu"), settings)  # trains the classifier once
        shutil.rmtree(cache / "reference")
        t = time.perf_counter()
        evaluate(model, data, torch.device("cpu"), settings)  # computes the reference
        t_recompute = time.perf_counter() - t
        t = time.perf_counter()
        evaluate(model, data, torch.device("cpu"), settings)  # reads it from the cache
        t_cached = time.perf_counter() - t
        print(f"one trial's evaluation ({', '.join(settings.metrics)}; {samples} samples per "
              f"FID, digits): cached reference {t_cached:.2f} s, recomputed {t_recompute:.2f} s,"
              f" ratio cached/recomputed {t_cached / t_recompute:.3f}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if before is None:  # the user's cache again (part 3 reads its trained classifier)
            os.environ.pop("VAE_ABLATIONS_CACHE", None)
        else:
            os.environ["VAE_ABLATIONS_CACHE"] = before


def kid_per_subset(real, fake, subsets=100, subset_size=1000, seed=0, device=None):
    """KID as the evaluation computed it before: torchmetrics' poly_mmd of every pair of
    subsets, the same subsets as engine's kid (the same generator, real then fake)."""
    from torchmetrics.image.kid import poly_mmd
    from engine.eval.metrics.sample_quality import subsets_differ
    n = min(subset_size, len(real), len(fake))
    r = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float64)).to(device)
    f = torch.from_numpy(np.ascontiguousarray(fake, dtype=np.float64)).to(device)
    if not subsets_differ(len(real), len(fake), subset_size):
        return float(poly_mmd(r, f)), math.nan
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([poly_mmd(r[torch.randperm(len(r), generator=gen)[:n].to(r.device)],
                                   f[torch.randperm(len(f), generator=gen)[:n].to(f.device)])
                          for _ in range(subsets)])
    return float(values.mean()), float(values.std(unbiased=False))


def inference_classifier(samples: int, dataset: str, rounds: int = 2) -> None:
    import statistics as st
    from unittest import mock
    import models
    from engine.data import load_dataset
    from engine.eval.evaluate import evaluate
    from engine.eval.groups import fid as fid_group
    from engine.eval.metrics import features
    from engine.run.trial import train_epoch
    from searches.ablation_uae import SEARCH
    import threadpoolctl
    torch.set_num_threads(1)  # and BLAS (the GMM, the Fréchet step): as a trial on one CPU
    threadpoolctl.threadpool_limits(limits=1)
    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = models.build(models.PRESETS["UAE-code"].replace(arch="mlp"), data.image_shape)
    opt = model.make_optimizer()  # ablation_uae's UAE row as its default runs it on MNIST-5k
    for _ in range(5):  # trained a little: an untrained model's latents hold the GMM's fit
        train_epoch(model, opt, data.train.images, 64, torch.Generator().manual_seed(0))
    settings = SEARCH.evaluation.replace(metrics=("fid",), fid_samples=samples)
    evaluate(model, data, torch.device("cpu"), settings)  # the classifier, the reference
    times, fids = {"before": [], "after": []}, {}
    for _ in range(rounds):
        for name in ("before", "after"):
            with mock.patch.object(features, "for_inference",
                                   (lambda net: net) if name == "before"
                                   else features.for_inference), \
                    mock.patch.object(fid_group, "kid", kid_per_subset if name == "before"
                                      else fid_group.kid), \
                    mock.patch.object(features, "CPU_BATCH", settings.batch_size
                                      if name == "before" else features.CPU_BATCH):
                t = time.perf_counter()
                fids[name] = evaluate(model, data, torch.device("cpu"), settings)
                times[name].append(time.perf_counter() - t)

    def worst(prefix: str) -> float:  # over the keys with a number (not NaN, not a reason)
        a, b = fids["after"], fids["before"]
        return max((abs(a[k] - b[k]) / abs(b[k]) for k in b if k.startswith(prefix)
                    and isinstance(b[k], float) and not math.isnan(b[k])), default=math.nan)

    keys = [k for k in fids["before"] if k.startswith("eval/fid")]
    before, after = st.median(times["before"]), st.median(times["after"])
    print(f"one trial's FID group ({len(keys)} FIDs, {samples} samples, {dataset}, 1 thread): "
          f"before {before:.2f} s, after {after:.2f} s, ratio after/before {after / before:.3f}"
          f"; largest relative difference: FID {worst('eval/fid'):.1e}, "
          f"KID {worst('eval/kid'):.1e}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    one_trial(2_000 if args.quick else 10_000)
    frechet_step()
    inference_classifier(2_000 if args.quick else 10_000, "digits" if args.quick else "mnist5k")
