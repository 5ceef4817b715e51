"""--precision: the encoder and decoder networks under autocast (bf16, fp16 with a loss
scaler), everything after them in fp32; the losses of every preset agree with fp32 on a fixed
batch to the tolerances stated here; fp16 training resumes exactly and never steps on a
non-finite loss."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import models
from engine.data import load_dataset
from engine.host_reads import HostReads
from engine.eval.evaluate import reconstruction_mse
from engine.run.spec import TrialSpec
from engine.run.trial import Diverged, train_epoch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_trial import params, run, same_state  # noqa: E402

# |loss_low - loss_fp32| / |loss_fp32| on a fixed batch of 16 28x28 images at initialisation,
# the networks in the low precision. Measured worst cases (this CPU, torch 2.14): bf16 1.1e-2
# (Diag-D: its per-pixel MLE variance divides by the bf16 decoder's small residuals), fp16
# 7e-5; each term's worst, bf16 1.6e-2 and fp16 5.7e-3 (the gradient penalties of RAE-GP,
# which differentiate through the low-precision decoder).
LOSS_TOL = {"bf16": 2e-2, "fp16": 2e-3}
TERM_TOL = {"bf16": 5e-2, "fp16": 2e-2}


def _losses(model, x, precision):
    torch.manual_seed(1)  # the same draws (noise, sigma points' picks) in every precision
    with model.compute_in(precision):
        return model.loss(x)


@pytest.mark.parametrize("preset", list(models.PRESETS))
def test_every_preset_loss_in_bf16_and_fp16_agrees_with_fp32(preset):
    torch.manual_seed(0)
    model = models.build(preset, (1, 28, 28))
    x = torch.rand(16, 1, 28, 28)
    ran_in = []
    for net in (model.encoder, model.decoder):  # the first layer's output dtype
        first = next(m for m in net.modules() if isinstance(m, (torch.nn.Linear,
                                                                   torch.nn.Conv2d,
                                                                   torch.nn.ConvTranspose2d)))
        first.register_forward_hook(lambda m, i, o: ran_in.append(o.dtype))
    ref = {k: float(v.detach()) for k, v in _losses(model, x, "fp32").items()}
    assert set(ran_in) == {torch.float32}
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        ran_in.clear()
        low = _losses(model, x, precision)
        assert set(ran_in) == {dtype}  # the networks did run in it
        assert all(v.dtype == torch.float32 for v in low.values())  # the terms did not
        rel = {k: abs(float(v.detach()) - ref[k]) / max(abs(ref[k]), 1e-8) for k, v in low.items()}
        assert rel["loss"] <= LOSS_TOL[precision], (precision, rel)
        assert max(rel.values()) <= TERM_TOL[precision], (precision, rel)


def test_compute_in_restores_fp32_after_it_and_after_an_error():
    model = models.build("AE", (1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(RuntimeError), model.compute_in("bf16"):
        raise RuntimeError
    assert model.reconstruct(x).dtype == torch.float32
    with model.compute_in("bf16"):
        low = model.reconstruct(x)
    assert not torch.equal(low, model.reconstruct(x))  # it computed differently inside


def test_fp16_training_reads_nothing_a_batch_and_never_steps_on_a_nan():
    torch.manual_seed(0)
    model = models.build("AE", (1, 8, 8))
    opt = model.make_optimizer()
    scaler = torch.amp.GradScaler("cpu")
    counts = []
    for n in (16, 48):
        with model.compute_in("fp16"), HostReads() as syncs:
            train_epoch(model, opt, torch.rand(n, 1, 8, 8), 8,
                        torch.Generator().manual_seed(0), scaler=scaler)
        counts.append(syncs.count)
    assert counts == [0, 0]
    x = torch.rand(16, 1, 8, 8)
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(Diverged), model.compute_in("fp16"):
        train_epoch(model, opt, x, 8, torch.Generator().manual_seed(0), scaler=scaler)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_low_precision_trial_resumes_exactly_and_evaluates_in_fp32(tmp_path, precision):
    p = params(precision=precision)
    full = run(p, tmp_path / "a")
    resumed = run(p, tmp_path / "b", resume=full.states[0])
    assert same_state(full.states[-1], resumed.states[-1])
    assert ("scaler" in full.states[0]) == (precision == "fp16")  # fp16's loss scale is kept
    assert full.states[0]["params"]["precision"] == precision
    fp32 = run(params(), tmp_path / "c")
    # the same seed and data in another precision: close, not equal
    a, b = full.reports[0]["train/loss"], fp32.reports[0]["train/loss"]
    assert a != b and a == pytest.approx(b, rel=0.05)
    # the evaluation ran on the trained weights in fp32
    model = models.build("AE", (1, 8, 8))
    model.load_state_dict(full.states[-1]["model"])
    test = load_dataset("digits").test.images
    assert full.reports[-1]["test/mse"] == pytest.approx(reconstruction_mse(model, test),
                                                         rel=1e-9)


def test_precision_reaches_search_json_and_every_trial_and_defaults_to_fp32(tmp_path):
    from engine.run.cli import parse_args
    from engine.run.spec import prepare
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    args = parse_args(SEARCH, ["--smoke", "--out", str(tmp_path / "r"), "--precision", "bf16"])
    spec, out = prepare(SEARCH, args, None)
    assert spec.precision == "bf16" and spec.trial_space()["precision"] == "bf16"
    spec.save(out)
    assert json.loads((out / "search.json").read_text())["precision"] == "bf16"
    old = {k: v for k, v in spec.trial_space().items() if k != "precision"}
    assert TrialSpec.from_params({**old, "label": "UAE", "seed": 0, "data": None,
                                  "config": models.PRESETS["UAE"].to_dict()}).precision == "fp32"
    assert parse_args(SEARCH, ["--smoke"]).precision == "fp32"


def test_an_unknown_precision_is_refused_with_exit_2(capsys):
    from engine.run.cli import parse_args
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    with pytest.raises(SystemExit) as e:
        parse_args(SEARCH, ["--precision", "int8"])
    assert e.value.code == 2 and "--precision" in capsys.readouterr().err


# --- the GPU layout: channels_last for convolutional nets on CUDA, computed the same ---

def test_a_conv_net_on_cuda_takes_channels_last_and_everything_else_the_default_layout():
    conv, mlp = models.build("UAE", (1, 28, 28)), models.build("UAE", (1, 8, 8))
    assert conv.memory_format(torch.device("cuda")) == torch.channels_last
    assert conv.memory_format(torch.device("cuda:1")) == torch.channels_last
    assert conv.memory_format(torch.device("cpu")) == torch.contiguous_format
    assert mlp.memory_format(torch.device("cuda")) == torch.contiguous_format
    conv.place("cpu", torch.channels_last)
    weights = [m.weight for m in conv.modules() if isinstance(m, torch.nn.Conv2d)]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous() for w in weights)  # the layout did change


# a preset for each axis value that handles images after the networks: the decoder
# variances (fixed, learned gamma, the MLEs and a trainable head), the decoder penalties
# (gradients with respect to z, their eigen-weighted form), the codebooks, the MMD
IMAGE_AXES = ("VAE", "RAE-GP", "RAE-GP-code", "UAE", "UAE-code", "VAE-learned-γ", "Iso-I",
              "Diag-I", "Iso-D", "Diag-D", "Diag-D-trainable", "MVU-AE", "VQ-VAE", "WAE-MMD")


@pytest.mark.parametrize("preset,shape", [
    *((p, (1, 28, 28)) for p in IMAGE_AXES),
    ("UAE", (3, 32, 32)), ("Diag-D", (3, 64, 64))])
def test_channels_last_gives_the_losses_gradients_and_reconstructions_of_the_default(preset,
                                                                                      shape):
    """The presets of IMAGE_AXES on conv28 and the larger conv nets (the paper's conv64 at 3x64x64): the
    layout moves no loss term, gradient or reconstruction beyond float rounding (a view of a
    channels_last tensor that assumed the default strides would fail or scramble pixels)."""
    torch.manual_seed(0)
    # float64, so that the sums a layout reorders round far below what a misplaced pixel
    # would move (float32's rounding, amplified by BatchNorm over 2 inputs and by Diag-D's
    # per-pixel variances, reaches 1e-3 of a term)
    ref = models.build(preset, shape).double()
    nhwc = models.build(preset, shape).double()
    nhwc.load_state_dict(ref.state_dict())
    nhwc.place("cpu", torch.channels_last)
    x = torch.rand(2, *shape, dtype=torch.float64)
    out = {}
    for name, model in (("ref", ref), ("nhwc", nhwc)):
        torch.manual_seed(1)
        terms = model.loss(x)
        terms["loss"].backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        with torch.no_grad():  # as evaluated: BatchNorm on its running statistics
            out[name] = ({k: v.detach() for k, v in terms.items()}, grads,
                         model.eval().reconstruct(x))
    (t0, g0, r0), (t1, g1, r1) = out["ref"], out["nhwc"]
    assert t0.keys() == t1.keys()
    for k in t0:
        assert float(t1[k]) == pytest.approx(float(t0[k]), rel=1e-9, abs=1e-12), k
    # summed in another order: each parameter's gradient against the largest one's norm
    # (a bias before a BatchNorm has a gradient of 0 up to rounding)
    scale = max(g.norm() for g in g0 if g is not None)
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).norm() <= 1e-7 * scale
    assert torch.allclose(r0, r1, rtol=1e-9, atol=1e-12)


def test_a_gpu_trial_lets_cudnn_pick_its_convolution_algorithms_and_a_cpu_one_does_not():
    from engine.run.trial import tune_backends
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        tune_backends(torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        tune_backends(torch.device("cuda", 0))
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
