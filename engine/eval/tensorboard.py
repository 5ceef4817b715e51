"""TensorBoard for one trial: every reported metric as a scalar (once, at its epoch), image
grids of reconstructions and samples at intervals, and the trial's HParams session, in
<run folder>/tensorboard/<row>/seed<k> (board_dir). `tensorboard --logdir <run
folder>/tensorboard` shows every trial side by side, named by its row and seed; the HPARAMS
tab has a row per (row, seed) and a group per row.

Why the HParams data look as they do (TensorBoard 2.x's plugin, read back by
tests/test_tensorboard.py the way the plugin reads it):
- No experiment summary is written. The plugin takes the first experiment summary it finds
  in a logdir and drops the hyperparameters and metrics of every other, so two studies under
  one logdir (a cluster's /mnt/shared/runs) lost one study's columns. Without one it infers
  the experiment from every session: the union of their hyperparameters (strings, such as
  the row's label, as discrete domains) and every scalar tag as a metric.
- The session starts when the trial does, so a running, stopped or diverged trial shows its
  latest values; its group is "<run folder>/<row>", so TensorBoard aggregates the seeds of a
  row, and rows of the same name in two runs stay apart.
- A session's end status is the first one written in its folder (the plugin keeps a tag's
  first metadata), so it is written once, when the trial ends: SUCCESS (completed), FAILURE
  (diverged, or an error: the driver writes that one). A trial that ASHA stopped, an
  interrupt left unfinished, or that is still running has none: TensorBoard's "unknown".
"""
from __future__ import annotations

import glob
import os
import re
import sys
import time
import unicodedata

import torch
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from torch.utils.tensorboard import SummaryWriter

import models
from engine.files import BOARDS
from models import float_images

GRID = 16  # images per grid row
LEGIBLE = 64  # px: smaller images are enlarged (nearest) to at least this height in a grid


def make_grid(x: torch.Tensor, nrow: int) -> torch.Tensor:
    """torchvision's grid of (B, C, H, W) images, each first enlarged by the whole factor that
    brings it to LEGIBLE px (nearest neighbour: the pixels stay visible as pixels), so a grid
    of 16 8x8 digits is 1,058 px wide (64 px each, 2 px apart) rather than 162."""
    factor = max(1, -(-LEGIBLE // x.shape[-2]))  # ceil: 8 px -> 8x, 28 -> 3x, 64 -> 1x
    if factor > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
    from torchvision.utils import make_grid as grid  # torchvision: ~1 s, only for pictures
    return grid(x, nrow=nrow)


# a trial's end as TensorBoard's HParams plugin knows it (it has no "stopped early")
END_STATUS = {"completed": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
              "error": api_pb2.STATUS_FAILURE}


# characters without an ASCII decomposition, as text (Greek letters are spelled out below)
_SPELLED = {"×": "x", "−": "-", "–": "-", "—": "-", "±": "+-", "·": ".", "‖": "||",
            "√": "sqrt", "∇": "grad", "≈": "~", "≤": "<=", "≥": ">=", '"': "'", "\\": "/"}


def ascii_text(text: str) -> str:
    """`text` in printable ASCII without '"' or a backslash, spelled rather than dropped
    ("UT-VAE*-full-Σ" -> "UT-VAE*-full-Sigma", "VAE-σx²=1" -> "VAE-sigmax^2=1").

    TensorBoard's HParams plugin infers a string column's checkbox filter from the sessions'
    values through json_format.MessageToJson, which escapes every other character ("Σ" becomes
    the six characters "\\u03a3"), and then compares the checked values with the sessions'
    own: a row whose label has a "Σ" vanished from the table as soon as the filter applied."""
    out, script = [], None  # script: "^" or "_" while in a run of super-/subscripts
    for c in text:
        name = unicodedata.name(c, "")
        mark = "^" if name.startswith("SUPERSCRIPT ") else "_" if name.startswith(
            "SUBSCRIPT ") else None
        if mark:  # "10⁻⁶" -> "10^-6"
            digit = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
            out.append(("" if mark == script else mark) + (digit or "-"))
        elif c.isascii() and c not in _SPELLED:
            out.append(c)
        elif name.startswith("GREEK ") and " LETTER " in name:
            word = name.split(" LETTER ", 1)[1].split()[0].lower().replace("lamda", "lambda")
            out.append(word.capitalize() if "CAPITAL" in name else word)
        else:
            out.append(_SPELLED.get(c) or unicodedata.normalize("NFKD", c).encode(
                "ascii", "ignore").decode() or "?")
        script = mark
    return "".join(out)


def hyperparameters(spec, run: str) -> dict[str, float | int | str | bool]:
    """The HParams columns of a trial: its run folder, search, data set (and data options),
    row, seed and every field of its resolved config (None and tuples as text; text as
    ascii_text, so that TensorBoard's filters keep every row)."""
    def value(v):
        if isinstance(v, str):
            return ascii_text(v)
        return v if isinstance(v, (int, float, bool)) else ascii_text(str(v))
    return {"run": value(run), "search": value(spec.search or ""),
            "dataset": value(spec.dataset), "data": value(spec.data or "as is"),
            "label": value(spec.label), "seed": spec.seed,
            **{k: value(v) for k, v in spec.config.to_dict().items()}}


def session_start(spec, run: str) -> summary_pb2.Summary:
    """The session's start: its hyperparameters and its group, "<run folder>/<row>"."""
    return summary_v2.hparams_pb(hyperparameters(spec, run), trial_id=f"{run}/{spec.label}",
                                 start_time_secs=time.time())


def session_end(status: str) -> summary_pb2.Summary:
    """The session's end with END_STATUS[status] (summary_v2 writes it only together with an
    experiment summary, which this module avoids)."""
    info = plugin_data_pb2.SessionEndInfo(status=END_STATUS[status], end_time_secs=time.time())
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                      metadata=metadata.create_summary_metadata(
                          plugin_data_pb2.HParamsPluginData(session_end_info=info)))
    return summary




def _path_part(text: str) -> str:
    """One folder name from a row's ASCII label: no separator, never "." or ".."."""
    part = text.replace("/", "-").replace(os.sep, "-")
    return part if part.strip(".") else f"_{part}"


def board_dir(trial_dir: str, spec) -> str:
    """Where a search's trial writes its TensorBoard events: <run>/tensorboard/<row>/seed<k>
    (the row as ascii_text spells it, as the HParams columns do), so that `tensorboard
    --logdir <run>/tensorboard` lists the trials as `<row>/seed<k>` and a row's regex (`^RAE/`)
    selects its seeds; a logdir of several runs shows `<run>/tensorboard/<row>/seed<k>`. A
    sampled search (Optuna: `spec.sampled`) has many trials of one row and seed: each adds
    its trial number, the tail of its folder's name (`UAE/seed0/00007`). A continued trial
    keeps its folder, so its number and its board. `spec`: the trial's TrialSpec
    (engine/run/types.py)."""
    run = os.path.dirname(os.path.abspath(trial_dir))
    parts = [_path_part(ascii_text(str(spec.label))), f"seed{spec.seed}"]
    if spec.sampled:
        parts.append(os.path.basename(os.path.normpath(trial_dir)).rsplit("_", 1)[-1])
    return os.path.join(run, BOARDS, *parts)


DRIVER_END = ".driver-end"  # the suffix of the event file end_session writes


def end_session(board: str, status: str) -> None:
    """End a trial's session from outside it (the driver, for a trial that failed with an
    error: its own process could not) in its events folder `board`, in an event file of its
    own (DRIVER_END), which a --resume that continues the trial removes (forget_driver_end):
    the plugin keeps the first end status in a folder, and the continued trial writes its own."""
    with SummaryWriter(board, filename_suffix=DRIVER_END) as writer:
        writer.file_writer.add_summary(session_end(status))


def forget_driver_end(board: str) -> None:
    for path in glob.glob(os.path.join(glob.escape(str(board)), f"*{DRIVER_END}")):
        os.unlink(path)


_EVENT_SECOND = re.compile(r"events\.out\.tfevents\.(\d{10})\.")
MAX_WAIT_S = 2.0  # wait_to_sort_last's longest wait


def wait_to_sort_last(board: str) -> None:
    """Return once an event file opened now in `board` sorts after every one already there.

    TensorBoard reads a folder's event files in the order of their names,
    "events.out.tfevents.<10-digit second>.<host>.<pid>.<counter>", and a resumed trial's
    purge_step only drops the epochs it will write again if its file is read after the first
    run's. Within one second the host, pid and counter decide, as text: ".10" sorts before
    ".9", so the first run's epochs were read last and their stale values won. A later second
    always sorts later, so wait for it: at most a second where a trial is resumed within the
    second its events folder was written. An event file from a node whose clock runs ahead
    (shared storage) could ask for longer: past MAX_WAIT_S the board is written unordered and
    says so, rather than hold the trial."""
    seconds = [int(m.group(1)) for name in (os.listdir(board) if os.path.isdir(board) else ())
               if (m := _EVENT_SECOND.match(name))]
    if not seconds:
        return
    after = max(seconds) + 1  # the first second whose files sort after all of these
    if after - time.time() > MAX_WAIT_S:
        print(f"tensorboard: {board} holds an event file {max(seconds) - time.time():.0f} s "
              "ahead of this node's clock; the resumed epochs may show the earlier run's "
              "values there", file=sys.stderr)
        return
    while time.time() < after:
        time.sleep(after - time.time())


class TrialBoard:
    def __init__(self, trial_dir: str, spec, data, start_epoch: int, board: str | None = None):
        """`spec`: the trial's engine.run.spec.TrialSpec; `board`: its events folder
        (board_dir in a search), else <trial_dir>/tensorboard."""
        board = board or os.path.join(trial_dir, "tensorboard")
        wait_to_sort_last(board)
        # purge_step drops what a crashed run logged after its last checkpoint
        self.writer = SummaryWriter(board, purge_step=start_epoch)
        self.spec, self.data = spec, data
        run = os.path.basename(os.path.dirname(os.path.abspath(trial_dir)))
        # at every start (a resumed trial's too: the plugin keeps the first, the same values)
        self.writer.file_writer.add_summary(session_start(spec, run))
        self.every = spec.image_every
        self.fixed = float_images(data.val.images[:GRID])  # the same inputs each time: (16, C, H, W)
        self.prior_z = torch.randn(GRID, spec.config.latent_dim,
                                   generator=torch.Generator().manual_seed(0))

    def epoch(self, model, metrics: dict, epoch: int, final: bool,
              drawn: dict | None = None) -> None:
        """`drawn`: {density name: (n, D) latents} the final evaluation sampled; the final
        grids decode their first 32 rather than fit the density a second time."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                self.writer.add_scalar(k, v, epoch)
        if final or epoch % self.every == 0 or epoch == 1:
            self._guard("images", self._images, model, epoch)
        if final:
            self._guard("density samples", self._density_samples, model, epoch, drawn or {})
            self.end("completed")
        self.writer.flush()

    def end(self, status: str) -> None:
        """The session's end (END_STATUS): "completed", or "diverged" (run_trial)."""
        self.writer.file_writer.add_summary(session_end(status))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _guard(self, what, fn, *args) -> None:
        # A picture that cannot be drawn must not cost the trial its result; say so.
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            print(f"tensorboard: {what} not written: {type(e).__name__}: {e}", file=sys.stderr)
            self.writer.add_text("errors", f"{what} not written: {e}")

    @torch.no_grad()
    def _images(self, model, epoch: int) -> None:
        model.eval()
        dev = next(model.parameters()).device
        x = self.fixed.to(dev)
        # top row the inputs, bottom row their reconstructions D(mu(x))
        self.writer.add_image("reconstructions", make_grid(
            torch.cat([x, model.reconstruct(x)]).clamp(0, 1).cpu(), nrow=GRID), epoch)
        self.writer.add_image(f"samples/{models.PRIOR}", make_grid(
            model.decode(self.prior_z.to(dev)).clamp(0, 1).cpu(), nrow=GRID), epoch)

    def _density_samples(self, model, epoch: int, drawn: dict) -> None:
        dev = next(model.parameters()).device
        # the prior's grid is drawn every image epoch (_images); the fitted densities' come
        # from the evaluation: fitting a GMM or training a second stage again for 32 images
        # doubled a 2-Stage trial's end (benchmarks/trial_end.py)
        fitted = {name: z[:2 * GRID] for name, z in drawn.items()
                  if models.DENSITY_SETS[name].fitted}
        if not fitted:  # the evaluation sampled no fitted density: the config's, here
            # fitting may train (a second-stage VAE), so no no_grad around it
            density = models.fit_density(model, self.data.train.images, seed=self.spec.seed)
            fitted = {model.cfg.density: density.sample(2 * GRID, seed=0)}
        for name, z in fitted.items():  # decoded as the FID decoded them (VQ: through a code)
            with torch.no_grad():
                x = model.generate(z.to(dev))
            self.writer.add_image(f"samples/{name}",
                                  make_grid(x.clamp(0, 1).cpu(), nrow=GRID), epoch)
