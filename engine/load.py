"""A trained model back from disk, without Ray: `load_model(folder)` on a trial folder, one of
its checkpoints, or a folder `export_best` wrote; `export_best(run, out)` writes the best
trial of a run (by the search's metric; of one row, seed or trial where asked) as a
self-contained folder.

An exported folder holds `model.json` (the resolved config, the image shape, and where the
weights came from: run, trial, row, seed, epoch, the metric and its value, the commit) and
`weights.pt` (the model's state dict alone, loaded with torch.load(weights_only=True)); it is
rebuilt with models.build(config, image_shape), so `models/` and this file are all it needs.
Bad input raises ValueError, one line that says what to pass instead.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

import models
from engine.data import dataset_shape
from engine.files import write_atomic, write_json_atomic
from engine.run.trial import LINES_FILE, STATE_FILE, load_state
from engine.run.types import RunSpec, TrialSpec
from engine.trial_files import read_lines

EXPORT_CONFIG, EXPORT_WEIGHTS, EXPORT_DENSITIES = "model.json", "weights.pt", "densities.pt"


def load_model(folder, device: str | torch.device = "cpu") -> models.GaussianAutoencoder:
    """The model (its resolved config as model.cfg) of a trial folder's newest checkpoint, of
    a checkpoint folder, or of an exported folder; on `device`, in eval mode."""
    folder = Path(folder)
    if (folder / EXPORT_CONFIG).is_file():
        meta = json.loads((folder / EXPORT_CONFIG).read_text())
        weights = torch.load(folder / EXPORT_WEIGHTS, map_location="cpu", weights_only=True)
        model = built(models.resolve(meta["config"]), tuple(meta["image_shape"]), weights,
                      folder)
        if (folder / EXPORT_DENSITIES).is_file():  # the samplers its FIDs used
            states = torch.load(folder / EXPORT_DENSITIES, map_location="cpu",
                                weights_only=True)
            model.densities = {name: models.state_density(state, model.cfg)
                               for name, state in states.items()}
            model.density_seed = meta.get("density_seed", 0)
    else:
        state = newest_checkpoint(folder)
        spec = trial_spec(state, folder)
        model = built(spec.config, dataset_shape(spec.dataset), state["model"], folder)
    return model.place(device).eval()


def trial_spec(state: dict, folder: Path) -> TrialSpec:
    """The TrialSpec of a checkpoint's params (ValueError, one line, where they do not
    build one: the trial folder's params edited)."""
    try:
        return TrialSpec.from_params(state["params"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder}: the checkpoint's params do not make a trial ({e}); was "
                         "the trial folder's params changed?") from None


def built(config: models.Config, shape: tuple, weights: dict, folder: Path):
    """The model of `config` for images of `shape` with `weights` (ValueError, one line,
    where they do not fit: the folder's params or model.json edited)."""
    model = models.build(config, shape)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # weights of another architecture or data set
        raise ValueError(f"{folder}: the checkpoint's weights do not fit its own config "
                         f"({first_line(e)}); was the trial folder's params changed?"
                         ) from None
    return model


def export_best(run_dir, out, row: str | None = None, seed: int | None = None,
                trial: str | None = None, data_root: str | None = None) -> Path:
    """The run's best completed trial by its search metric and mode (its last value), among
    those of `row` (matched as --rows matches it), of `seed`, or the trial folder `trial`
    where given, as an exported folder `out` (new, or empty). Returns the trial folder it
    came from."""
    from engine.report import NotARunFolder, load_trials  # pandas: export only
    run, out = Path(run_dir), Path(out)
    saved = run_spec(run)
    try:
        trials = load_trials(run)
    except NotARunFolder as e:
        raise ValueError(str(e)) from None
    metric, mode = saved.metric, saved.mode
    done = trials[(trials["status"] == "completed") & trials[metric].map(_finite)] \
        if metric in trials else trials.iloc[0:0]
    if done.empty:
        raise ValueError(f"{run} has no completed trial with a finite {metric}; finish it "
                         f"first (--resume --out {run})")
    done = _chosen(done, run, row, seed, trial)
    best = done.loc[done[metric].idxmin() if mode == "min" else done[metric].idxmax()]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; export into a new one")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: the folder {out.parent} does not exist; create it first")
    trial = run / best["trial"]
    state = newest_checkpoint(trial)
    spec = trial_spec(state, trial)
    densities = _fitted_densities(state, spec, data_root)  # before anything is written
    out.mkdir(exist_ok=True)
    # the weights alone (no optimizer, no RNG), written whole or not at all
    write_atomic(out / EXPORT_WEIGHTS, lambda tmp: torch.save(state["model"], tmp))
    write_atomic(out / EXPORT_DENSITIES, lambda tmp: torch.save(densities, tmp))
    write_json_atomic(out / EXPORT_CONFIG, {
        "densities": list(densities), "density_seed": spec.seed,
        "config": spec.config.to_dict(), "image_shape": list(dataset_shape(spec.dataset)),
        "dataset": spec.dataset, "data": spec.data, "label": spec.label,
        "seed": spec.seed, "epoch": state["epoch"], "metric": metric, "mode": mode,
        "value": float(best[metric]), "run": str(run.resolve()), "trial": best["trial"],
        "git": saved.git})
    return trial


def run_spec(run: Path) -> RunSpec:
    """A run folder's RunSpec, read from its search.json (ValueError, one line, where the
    folder is no run's or its search.json no search's record)."""
    from engine.report import NotARunFolder, load_search  # pandas: a run folder's reader
    try:
        search = load_search(run)
    except NotARunFolder as e:
        raise ValueError(str(e)) from None
    try:
        return RunSpec.from_json(search)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{run / 'search.json'} is not a search's record ({e})") from None


def _fitted_densities(state: dict, spec: TrialSpec, data_root: str | None
                      ) -> dict[str, dict]:
    """{name: models.density_state} of each ex-post density the trial's evaluation sampled
    its FIDs from (its settings' densities), fitted again as the evaluation fitted them: on
    the final model's latents of the training images, drawn and fitted with the trial's seed,
    so that they draw the same samples (ValueError, one line, where the data set cannot be
    read here)."""
    from engine.data import DataError, apply_options, load_dataset
    from engine.eval.settings import DENSITY_SETS
    settings = spec.evaluation
    if "fid" not in settings.metrics or not settings.densities:
        return {}
    try:
        data = apply_options(load_dataset(spec.dataset, data_root or spec.data_root),
                             spec.data)
    except (DataError, OSError) as e:
        raise ValueError(f"the fitted densities need {spec.dataset}'s training images "
                         f"({first_line(e)}); pass --data-root where they are now") from None
    model = built(spec.config, data.image_shape, state["model"], Path("."))
    seed = spec.seed  # the trial's evaluation's (engine/run/trial.py)
    latents = models.draw_latents(model, data.train.images, seed)
    out = {}
    for name in settings.densities:
        density = DENSITY_SETS[name].fit(latents, model.cfg, seed,
                                         models.redraw_latents(model, data.train.images, seed))
        out[name] = models.density_state(density)
    return out


def sample(model, n: int, density: str | None = None, seed: int | None = None
           ) -> torch.Tensor:
    """n images (n, C, H, W) decoded from an exported model's `density` (its first, e.g.
    "gmm10", unless named), drawn as its evaluation drew them (the trial's seed unless given):
    with the same seed, the FID's own samples."""
    found = getattr(model, "densities", None)
    if not found:
        raise ValueError("the model has no fitted density; load an exported folder "
                         "(vae-ablations export) of a run whose evaluation sampled one")
    name = density or next(iter(found))
    if name not in found:
        raise ValueError(f"no density {name!r}; the export has {', '.join(found)}")
    z = found[name].sample(n, seed=model.density_seed if seed is None else seed).float()
    with torch.no_grad():
        return model.generate(z.to(next(model.parameters()).device))


def _chosen(done, run: Path, row: str | None, seed: int | None, trial: str | None):
    """The completed trials that --row, --seed and --trial leave (ValueError, one line naming
    what there is, where none is left)."""
    if trial is not None:
        done = done[done["trial"] == Path(trial).name]
        if done.empty:
            raise ValueError(f"--trial {trial}: no completed trial folder of that name in {run}")
    if row is not None:
        from engine.run.spec import rows_named  # the spelling --rows accepts
        labels = list(dict.fromkeys(done["label"]))
        found = rows_named(row, labels)
        if len(found) != 1:
            raise ValueError(f"--row {row!r}: " + (f"could be any of {', '.join(found)}"
                             if found else "no completed trial of that row") +
                             f"; completed rows of {run}: {', '.join(labels)}")
        done = done[done["label"] == found[0]]
    if seed is not None:
        seeds = sorted(int(x) for x in done["seed"].dropna())
        done = done[done["seed"] == seed]
        if done.empty:
            raise ValueError(f"--seed {seed}: no completed trial of that seed"
                             + (f" of row {row!r}" if row else "") + f"; completed seeds: "
                             f"{', '.join(map(str, seeds)) or 'none'}")
    return done


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _checkpoint_epoch(path: Path) -> tuple[int, str]:
    """A checkpoint's place among its trial's: the last epoch of its result lines (LINES_FILE),
    then its name. Not the name alone: a --resume runs the continued trial as a new Tune trial
    in its folder, which numbers its checkpoints from checkpoint_000000 again and keeps only
    its own newest, so the first run's checkpoint_000002 (epoch 2) outlives a continued
    checkpoint_000000 (epoch 3). A checkpoint from before the lines were kept counts as
    epoch -1 (among its own kind, Tune's zero-padded numbers order them)."""
    epochs = [line.get("epoch") for line in read_lines(path.parent / LINES_FILE)]
    epochs = [e for e in epochs if isinstance(e, int) and not isinstance(e, bool)]
    return max(epochs, default=-1), str(path)


def newest_checkpoint(folder, runs_too: bool = False) -> dict:
    """The state of the newest checkpoint of a trial folder (or of a checkpoint folder).

    Not engine.run.trial.newest_state, which skips a checkpoint that does not load (half-copied
    when a trial died) and so would evaluate an older epoch without saying so, or report a
    truncated file as no checkpoint at all: here the user asked for this one, so say why it
    cannot be had and which older one can. `runs_too`: the command also takes a run folder
    (evaluate), so its errors say so."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; pass a trial folder of a run")
    if (folder / STATE_FILE).is_file():
        files = [folder / STATE_FILE]
    else:  # a Tune trial's checkpoints, else a DDP trial's
        files = (sorted(folder.glob(f"checkpoint_*/{STATE_FILE}"))
                 or sorted(folder.glob(f"ddp/checkpoint_*/{STATE_FILE}")))
    if not files:
        raise ValueError(f"{folder} holds no checkpoint (checkpoint_*/state.pt)"
                         + ("" if not runs_too else " and is no run folder (no search.json)")
                         + "; pass " + ("a run folder or " if runs_too else "")
                         + "a trial folder of a run")
    files.sort(key=_checkpoint_epoch)
    newest, older = files[-1], files[-2::-1]
    try:
        state = load_state(str(newest.parent))
    except Exception as e:  # noqa: BLE001  (truncated zip, half-written or not a checkpoint)
        readable = next((f for f in older if _loads(f)), None)
        raise ValueError(
            f"{newest}: the newest checkpoint is unreadable, truncated or corrupt "
            f"({first_line(e)}); "
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
    try:
        load_state(str(path.parent))
        return True
    except Exception:  # noqa: BLE001
        return False


def first_line(e: Exception) -> str:
    """An exception's first sentence, short: torch's messages run to paragraphs."""
    text = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]
    return text or type(e).__name__
