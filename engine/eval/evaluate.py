"""The evaluation every trial gets at its end: every metric the four papers report.

`evaluate(model, data, device, settings, seed)` runs the metric groups named in
`settings.metrics` and returns flat namespaced metrics plus "notes": for each metric that
could not be computed, one line saying why (the report prints them), and the feature space
FID was computed in. A group that fails is noted, never fatal to the trial.

Groups (the paper table each serves):
- "reconstruction" (UAE Table 2, MVU-AE Table 1): test/mse, test/psnr, test/ssim, test/lpips;
  test/mse_sum (summed over pixels, Takida Tables 4 and 6).
- "fid" (UAE Table 2; Takida Tables 4-6; Dai & Wipf Table 1; MVU-AE Table 2): eval/fid_rec,
  eval/fid_sample_<density> (prior, gmm10, gmm100, second_stage), eval/fid_interp_mid /
  _rand (Takida Table 5), and beside each FID its KID (eval/kid_<set>, eval/kid_std_<set>:
  unbiased at small reference sets; the std NaN, noted "n/a", where the KID subsets cannot
  differ), eval/precision_<set> / eval/recall_<set>, eval/is_<set> (Inception only). FID and
  KID are computed on features standardized by the reference split's mean and total s.d.
  (engine/eval/metrics/features.py): in the classifier's space eval/fid_<set> and
  eval/kid_<set> are the standardized ones; in Inception's, eval/fid_<set> and eval/kid_<set>
  stay the papers' raw ones (comparable with published numbers) and eval/fidz_<set>,
  eval/kidz_<set> are the standardized ones. The floor beside each: eval/floor_fid_<set>,
  eval/floor_kid_<set> (and floor_fidz / floor_kidz with Inception), what real images
  disjoint from the reference split score against it at the set's own size (or all there are:
  val first, then test or train), computed once per machine (features.real_floor); the note
  "floor" says which images.
- "latent" (MVU-AE Table 4): eval/latent_var, eval/ppl.
- "likelihood" (Takida Table 7): eval/nll (k-sample importance weighting), eval/nll_bpd.
- "variance" (Takida Table 3): eval/sigma_x2, the model's decoder variance Sigma_x estimated
  for each test image and pixel, averaged; eval/sigma_x2_<cell>, averaged over each cell of
  engine/data/__init__.py's partition (SU, SL, BU, BL: labels in the lower / upper half of the classes,
  upper / lower half of the rows; U, L without labels).
- "diagnostics" (Takida Table 1; Dai & Wipf; UAE Sec. 4.2 / App. B): eval/gap_1e-2,
  eval/gap_1e-3, eval/els, eval/kl, eval/sigma_z2, eval/mi, eval/mse_train_sum (Takida's MSE,
  summed over pixels) and eval/mse_train on training images; eval/active_dims,
  eval/inactive_dims, eval/gamma; eval/grad_var_<sampling>; the encoder spectrum is saved
  beside the trial (encoder_spectrum.json).

Sample counts are settings (`EvalSettings`); the papers use 10,000 for FID.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import models
from engine.data import cell_masks
from engine.eval.metrics import evaluating
from engine.eval.metrics import sample_quality as sq
from engine.eval.metrics.sample_quality import (NO_SUBSET_SPREAD, inception_score, kid,
                                                precision_recall, subsets_differ)
from engine.eval.metrics.diagnostics import encoder_spectrum, gradient_variance, takida_table1
from engine.eval.metrics.features import (NotComputed, choose_features, extract, real_floor,
                                          reference)
from engine.eval.metrics.frechet import TooFewSamples, frechet_distance, statistics
from engine.eval.metrics.latent import encoded_latents, latent_variance, perceptual_path_length
from engine.eval.metrics.likelihood import NotComputable, decoder_variance_map, iwae_nll
from engine.files import write_json_atomic
from models import float_images

GROUPS = ("reconstruction", "fid", "latent", "likelihood", "diagnostics", "variance")
DENSITY_SETS = models.DENSITY_SETS  # name -> models.DensitySet: what --eval fid samples


def parse_groups(text: str) -> tuple[str, ...]:
    """--eval's value: "all", "none", or group names separated by commas."""
    special = {"all": GROUPS, "none": ()}
    if text.strip() in special:
        return special[text.strip()]
    return tuple(g.strip() for g in text.split(",") if g.strip())


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and with how many samples (flags: --eval, --fid-samples, --features,
    --inception-weights, --eval-set FIELD=VALUE)."""
    metrics: tuple[str, ...] = GROUPS
    features: str = "auto"  # "auto" | "inception" | "classifier" (engine/eval/metrics/features.py)
    inception_weights: str | None = None  # pytorch-fid's weights file, else the hub cache
    reference_split: str = "test"  # FID's real images (and the reconstructed / interpolated)
    fid_samples: int = 10_000  # generated images per FID (the papers: 10,000)
    densities: tuple[str, ...] = tuple(DENSITY_SETS)  # every one models declares
    pr_k: int = 3  # Kynkäänniemi et al.'s k
    kid_subsets: int = 100  # KID's subsets and their size (torch-fidelity's defaults)
    kid_subset_size: int = 1000
    lpips_net: str = "alex"
    ppl_samples: int = 10_000
    ppl_epsilon: float = 1e-4  # MVU-AE / StyleGAN
    iwae_k: int = 500  # Takida Table 7
    nll_images: int = 1_000  # test images for the NLL bound (0: all)
    diagnostic_images: int = 1_000  # training images for Takida Table 1 (as App. D: train set)
    grad_var_draws: int = 32
    variance_draws: int = 8  # z ~ q(z|x) per test image for the "variance" group
    batch_size: int = 500
    # with the "fid" group: val/fid_rec every this many epochs during training and at the
    # last (engine/eval/training_fid.py); 0: never
    train_fid_every: int = 5

    def validate(self) -> "EvalSettings":
        """Raise ValueError with one line naming the bad setting."""
        bad = [m for m in self.metrics if m not in GROUPS]
        if bad:
            raise ValueError(f"--eval: unknown metric group {bad[0]!r}; groups: "
                             f"{', '.join(GROUPS)} (or all / none)")
        if self.features not in ("auto", "inception", "classifier"):
            raise ValueError(f"--features {self.features!r}: use auto, inception or classifier")
        if self.reference_split not in ("train", "val", "test"):
            raise ValueError(f"reference_split {self.reference_split!r}: use train, val or test")
        unknown = [d for d in self.densities if d not in DENSITY_SETS]
        if unknown:
            raise ValueError(f"densities: unknown {unknown[0]!r}; known: "
                             f"{', '.join(DENSITY_SETS)}")
        for name in ("fid_samples", "pr_k", "ppl_samples", "iwae_k", "grad_var_draws",
                     "variance_draws", "batch_size", "kid_subsets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 1")
        for name in ("nll_images", "diagnostic_images", "train_fid_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 0 (0: all)")
        for f in dataclasses.fields(self):  # every float setting, so none is forgotten
            value = getattr(self, f.name)
            # inf passes `> 0` below; NaN fails it with a message that does not say why
            if f.type in (float, "float") and not math.isfinite(value):
                raise ValueError(f"{f.name} {value} must be finite (not inf or nan), e.g. "
                                 f"{f.name}={f.default}")
        if self.kid_subset_size < 2:
            raise ValueError(f"kid_subset_size {self.kid_subset_size} must be >= 2")
        if not self.ppl_epsilon > 0:
            raise ValueError(f"ppl_epsilon {self.ppl_epsilon} must be > 0")
        if self.lpips_net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"lpips_net {self.lpips_net!r}: use alex, vgg or squeeze")
        return self

    def replace(self, **changes) -> "EvalSettings":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvalSettings":
        """Settings from a trial's params or search.json. None (a run from before the suite)
        is the reconstruction group only, as such runs were evaluated; fields this version
        does not know are dropped (a run written by another version)."""
        if d is None:
            return cls(metrics=("reconstruction",))
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("metrics"), str):
            d["metrics"] = parse_groups(d["metrics"])
        if isinstance(d.get("densities"), str):
            d["densities"] = tuple(v.strip() for v in d["densities"].split(",") if v.strip())
        for k in ("metrics", "densities"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d).validate()


@dataclass
class Context:
    model: torch.nn.Module  # eval mode, on `device`
    data: object  # engine.data.Dataset
    device: torch.device
    settings: EvalSettings
    seed: int
    out_dir: Path | None  # the trial's folder, for arrays (spectra); None: not saved
    notes: dict = field(default_factory=dict)  # metric -> why it was not computed
    cache: dict = field(default_factory=dict)  # shared between groups (LPIPS, features)
    # density name -> the (n, D) latents its FID decoded, for the caller (the trial's board
    # draws its grids from them instead of fitting the density again)
    drawn: dict = field(default_factory=dict)


# --- reconstruction -------------------------------------------------------------------------

@torch.no_grad()
def reconstruction_mse(model, images: torch.Tensor, batch_size: int = 512) -> float:
    """Mean squared error per pixel of the deterministic reconstruction D(mu(x)), each batch
    of `images` (uint8 or float, on any device) converted on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = float_images(images[i:i + batch_size], device)
        total += (model.reconstruct(x) - x).pow(2).flatten(1).mean(1).sum().item()
    return total / len(images)


def psnr(mse: float, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE), of the mean MSE over the set (inf for a perfect one)."""
    return 10 * math.log10(data_range ** 2 / mse) if mse > 0 else math.inf


def ssim_kernel(shape: tuple[int, ...]) -> int:
    """Wang et al.'s 11x11 Gaussian window, or the largest odd size that fits smaller images
    (7 for 8x8 digits)."""
    side = min(shape[-2:])
    return min(11, side if side % 2 else side - 1)


@torch.no_grad()
def ssim(model, images: torch.Tensor, device, batch_size: int) -> float:
    """Mean SSIM of D(mu(x)) against x (torchmetrics; Gaussian window, sigma 1.5, range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn
    k = ssim_kernel(images.shape)
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = float_images(images[i:i + batch_size], device)
        total += float(ssim_fn(model.reconstruct(x).clamp(0, 1), x, data_range=1.0,
                               kernel_size=k, reduction="sum"))
    return total / len(images)


def _guarded(out: dict, names: list[str], step: Callable[[], dict]) -> None:
    """out.update(step()); if it raises, each of `names` gets the reason instead, so one
    failing metric never takes the others of its group with it."""
    try:
        out.update(step())
    except Exception as e:  # noqa: BLE001
        out.update({n: f"failed: {type(e).__name__}: {e}" for n in names})


def _subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images drawn without replacement by `seed` (all for n = 0 or n >= len), so a subset
    is not the first images of a split that is ordered (patches: one photo, then the next)."""
    if not n or n >= len(images):
        return images
    gen = torch.Generator().manual_seed(seed)
    return images[torch.randperm(len(images), generator=gen)[:n].sort().values]


def _lpips(ctx: Context):
    if "lpips" not in ctx.cache:
        # lpips and torchvision's backbones load only where a group asks for LPIPS
        from engine.eval.metrics.pretrained import WeightsMissing, load_lpips
        try:
            ctx.cache["lpips"] = load_lpips(ctx.settings.lpips_net, device=ctx.device)
        except WeightsMissing as e:
            ctx.cache["lpips"] = str(e)
    return ctx.cache["lpips"]


@torch.no_grad()
def reconstruction(ctx: Context) -> dict:
    images = ctx.data.test.images.to(ctx.device)  # uint8 (or float): a batch at a time below
    bs = ctx.settings.batch_size
    mse = reconstruction_mse(ctx.model, images, bs)
    out: dict = {"test/mse": mse, "test/psnr": psnr(mse),
                 "test/mse_sum": mse * math.prod(images.shape[1:])}
    _guarded(out, ["test/ssim"],
             lambda: {"test/ssim": ssim(ctx.model, images, ctx.device, bs)})
    lp = _lpips(ctx)
    if isinstance(lp, str):
        out["test/lpips"] = lp
    else:
        def lpips_of(x: torch.Tensor) -> torch.Tensor:  # (B,) of one batch
            return lp(ctx.model.reconstruct(x).clamp(0, 1), x)
        _guarded(out, ["test/lpips"], lambda: {"test/lpips": float(torch.cat([
            lpips_of(float_images(images[i:i + bs])) for i in range(0, len(images), bs)]).mean())})
    return out


# --- FID, precision / recall, IS ------------------------------------------------------------

def _density_latents(ctx: Context) -> torch.Tensor:
    if "train_latents" not in ctx.cache:
        ctx.cache["train_latents"] = models.draw_latents(ctx.model, ctx.data.train.images,
                                                         ctx.seed)
    return ctx.cache["train_latents"]


def _image_sets(ctx: Context) -> dict[str, Callable]:
    """name -> a function giving an iterator of image batches (evaluated lazily, one at a
    time, so a failing density costs only its own metrics)."""
    m, s, dev = ctx.model, ctx.settings, ctx.device
    ref = getattr(ctx.data, s.reference_split).images
    sets: dict[str, Callable] = {"rec": lambda: sq.reconstructions(m, ref, dev, s.batch_size)}

    def density_set(name: str, declared: models.DensitySet):
        def make():
            density = declared.fit(_density_latents(ctx), m.cfg, ctx.seed,
                                   models.redraw_latents(m, ctx.data.train.images, ctx.seed))
            z = density.sample(s.fid_samples, seed=ctx.seed).float()
            ctx.drawn[name] = z  # this density's own name (not the loop's last, read late)
            return sq.decoded(m, z, dev, s.batch_size)
        return make

    for name in s.densities:
        sets[f"sample_{name}"] = density_set(name, DENSITY_SETS[name])
    for ratio in ("mid", "rand"):
        sets[f"interp_{ratio}"] = (lambda r=ratio: sq.decoded(
            m, sq.interpolation_latents(m, ref, s.fid_samples, r, ctx.seed, dev, s.batch_size),
            dev, s.batch_size))
    return sets


FID_KEYS = ("fid", "kid", "kid_std", "precision", "recall", "floor_fid", "floor_kid")


@torch.no_grad()
def fid(ctx: Context) -> dict:
    s = ctx.settings
    sets = _image_sets(ctx)
    try:
        space = choose_features(ctx.data, s.features, ctx.device, s.inception_weights,
                                reference_split=s.reference_split)
        ref = reference(ctx.data, s.reference_split, space, ctx.device)
        raw_ref = (reference(ctx.data, s.reference_split, space.raw(), ctx.device)
                   if space.reports_raw else None)
    except (NotComputed, TooFewSamples) as e:
        keys = FID_KEYS + (("fidz", "kidz") if s.features == "inception" else ())
        return {f"eval/{k}_{n}": str(e) for n in sets for k in keys}
    ctx.notes["features"] = space.label
    z = space.standardization
    out: dict = {}
    floors: dict[int, str] = {}  # n -> where the floor's images came from
    for name, make in sets.items():
        try:  # the images and their features (a GMM that cannot be fitted fails here)
            raw, logits = _features_of(space, make(), ctx.device, s.batch_size)
        except Exception as e:  # noqa: BLE001
            out.update({f"eval/{k}_{name}": f"failed: {type(e).__name__}: {e}"
                        for k in FID_KEYS})
            continue
        feats = z.apply(raw)
        # standardized FID and KID; in a space that reports raw ones (Inception), the papers'
        # raw FID and KID under the usual names, the standardized ones as fidz / kidz
        fid_name, kid_name = ("fidz", "kidz") if space.reports_raw else ("fid", "kid")
        _guarded(out, [f"eval/{fid_name}_{name}"], lambda: {
            f"eval/{fid_name}_{name}": frechet_distance(ref.stats, statistics(feats))})
        if space.reports_raw and isinstance(out.get(f"eval/fidz_{name}"), float):
            out[f"eval/fid_{name}"] = out[f"eval/fidz_{name}"] * z.scale ** 2  # exact
        kids = [(kid_name, ref.features, feats)]
        if space.reports_raw:
            kids.append(("kid", raw_ref.features, raw))
        for k, real, fake in kids:
            _guarded(out, [f"eval/{k}_{name}", f"eval/{k}_std_{name}"], lambda: dict(zip(
                (f"eval/{k}_{name}", f"eval/{k}_std_{name}"),
                kid(real, fake, s.kid_subsets, s.kid_subset_size, seed=ctx.seed,
                    device=ctx.device))))
            if not subsets_differ(len(real), len(fake), s.kid_subset_size):
                ctx.notes[f"eval/{k}_std_{name}"] = NO_SUBSET_SPREAD
        _guarded(out, [f"eval/precision_{name}", f"eval/recall_{name}"], lambda: dict(zip(
            (f"eval/precision_{name}", f"eval/recall_{name}"),
            precision_recall(ref.features, feats, s.pr_k, device=ctx.device, seed=ctx.seed))))
        if logits is not None and space.has_inception_logits:
            _guarded(out, [f"eval/is_{name}"],
                     lambda: {f"eval/is_{name}": inception_score(logits)})
        _guarded(out, [f"eval/floor_fid_{name}", f"eval/floor_kid_{name}"],
                 lambda: _floor(ctx, space, name, len(raw), floors))
    if floors:
        ctx.notes["floor"] = (
            f"real data (eval/floor_fid_<set>, eval/floor_kid_<set>): against the "
            f"{len(ref.features):,} {s.reference_split} images, "
            + "; ".join(f"at {n:,} images: {where}" for n, where in sorted(floors.items())))
    if not space.has_inception_logits:
        ctx.notes["eval/is_*"] = (f"the Inception Score needs Inception's classes; FID here is "
                                  f"in {space.name}")
    return out


def _floor(ctx: Context, space, name: str, n: int, floors: dict) -> dict:
    """eval/floor_fid_<name>, eval/floor_kid_<name> (and floor_fidz / floor_kidz where the
    space reports raw values): real images disjoint from the reference split, as many as the
    set has (or all there are), against the reference; cached per machine (real_floor)."""
    s = ctx.settings
    f = real_floor(ctx.data, s.reference_split, space, n, ctx.device, s.kid_subsets,
                   s.kid_subset_size, s.batch_size)
    floors[n] = f"{f['images']}" + ("" if f["n"] == n else f" (all there are of {n:,})")
    if space.reports_raw:
        return {f"eval/floor_fid_{name}": f["fid_raw"], f"eval/floor_kid_{name}": f["kid_raw"],
                f"eval/floor_fidz_{name}": f["fid"], f"eval/floor_kidz_{name}": f["kid"]}
    return {f"eval/floor_fid_{name}": f["fid"], f"eval/floor_kid_{name}": f["kid"]}


def _features_of(space, batches, device, batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    feats, logits = [], []
    for images in batches:
        f, lg = extract(space, images, device, batch_size, raw=True)
        feats.append(f)
        if lg is not None:
            logits.append(lg)
    return np.concatenate(feats), (np.concatenate(logits) if logits else None)


# --- latent space, likelihood, diagnostics --------------------------------------------------

@torch.no_grad()
def latent(ctx: Context) -> dict:
    images = ctx.data.test.images.to(ctx.device)
    out: dict = {f"eval/{k}": v for k, v in latent_variance(ctx.model, images).items()}
    lp = _lpips(ctx)
    if isinstance(lp, str):
        out["eval/ppl"] = f"PPL is measured in LPIPS: {lp}"
        return out
    z, _ = encoded_latents(ctx.model, images)
    out["eval/ppl"] = perceptual_path_length(
        ctx.model, ctx.settings.ppl_samples, lp, ctx.settings.ppl_epsilon, latents=z,
        seed=ctx.seed, batch_size=ctx.settings.batch_size)["ppl"]
    return out


def likelihood(ctx: Context) -> dict:
    s = ctx.settings
    images = _subset(ctx.data.test.images, s.nll_images, ctx.seed)
    try:  # the training images stay on the CPU: only *_i_mle reads them, batch by batch
        r = iwae_nll(ctx.model, images.to(ctx.device), k=s.iwae_k, seed=ctx.seed,
                     train_images=ctx.data.train.images)
    except NotComputable as e:
        return {"eval/nll": str(e), "eval/nll_bpd": str(e)}
    return {"eval/nll": r["nll"], "eval/nll_bpd": r["nll_bpd"]}


def diagnostics(ctx: Context) -> dict:
    s = ctx.settings
    train = float_images(_subset(ctx.data.train.images, s.diagnostic_images, ctx.seed),
                         ctx.device)  # (n, *X): a subset (1,000 by default), as floats
    out: dict = {}
    # Takida's MSE is summed over pixels, on training images: named apart from test/mse
    names = {"mse": "mse_train_sum", "mse_per_pixel": "mse_train"}
    _guarded(out, ["eval/takida_table1"], lambda: {
        f"eval/{names.get(k, k)}": v
        for k, v in takida_table1(ctx.model, train, seed=ctx.seed).items()})

    def spectrum() -> dict:
        summary, eigenvalues = encoder_spectrum(ctx.model, train)
        if ctx.out_dir is not None:
            write_json_atomic(ctx.out_dir / "encoder_spectrum.json",
                              [float(v) for v in np.asarray(eigenvalues)])
        return {f"eval/{k}": v for k, v in summary.items()}
    _guarded(out, ["eval/encoder_spectrum"], spectrum)
    batch = train[:min(len(train), ctx.model.cfg.batch_size)]  # one minibatch, held fixed
    _guarded(out, ["eval/grad_var"], lambda: {
        f"eval/{k}": v for k, v in gradient_variance(
            ctx.model, batch, draws=s.grad_var_draws, seed=ctx.seed).items()})
    return out


def variance(ctx: Context) -> dict:
    test = ctx.data.test
    try:
        var = decoder_variance_map(ctx.model, test.images, ctx.data.train.images,
                                   ctx.settings.variance_draws, ctx.seed,
                                   ctx.settings.batch_size)  # (N, *X)
    except NotComputable as e:
        return {"eval/sigma_x2": str(e)}
    out = {"eval/sigma_x2": float(var.mean())}
    for cell, mask in cell_masks(test, ctx.data.num_classes).items():
        mask = mask.expand_as(var)
        if mask.any():
            out[f"eval/sigma_x2_{cell}"] = float(var[mask].mean())
    return out


EVALUATIONS: dict[str, Callable[[Context], dict]] = {
    "reconstruction": reconstruction, "fid": fid, "latent": latent,
    "likelihood": likelihood, "diagnostics": diagnostics, "variance": variance,
}


def evaluate(model, data, device=torch.device("cpu"), settings: EvalSettings | None = None,
             seed: int = 0, out_dir: str | Path | None = None,
             drawn: dict | None = None) -> dict:
    """Every asked-for group's metrics (floats) and "notes" {metric or group: why not
    computed, "features": the FID feature space}; "time/eval_<group>_s" per group. `drawn`,
    where given, is filled with {density name: the (n, D) latents sampled from it}."""
    settings = settings or EvalSettings()
    device = torch.device(device)
    ctx = Context(model, data, device, settings, seed, Path(out_dir) if out_dir else None,
                  drawn={} if drawn is None else drawn)
    # every CUDA device's RNG is reseeded by manual_seed, so every one is forked
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    metrics: dict = {}
    with evaluating(model):  # each module's own training flag restored after
        for name in settings.metrics:
            start = time.perf_counter()
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)  # each group's draws independent of the others
                try:
                    for k, v in EVALUATIONS[name](ctx).items():
                        if isinstance(v, str):
                            ctx.notes[k] = v
                        else:
                            metrics[k] = float(v)
                except Exception as e:  # noqa: BLE001  (never lose the trial for a metric)
                    ctx.notes[name] = f"failed: {type(e).__name__}: {e}"
            metrics[f"time/eval_{name}_s"] = time.perf_counter() - start
    return {**metrics, "notes": ctx.notes}
