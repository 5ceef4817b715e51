"""Tests of the single-run trainer engine/train.py: its output, its exit codes and messages on
bad input, and its metrics (psnr, reconstruction_mse) against independent computations."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

import models
from engine.train import main, psnr, reconstruction_mse

REPO = Path(__file__).resolve().parent.parent

EPOCH = re.compile(r"^epoch +(\d+) .*val/mse=([0-9.]+) \(")
FINAL = re.compile(r"^test/mse=([0-9.]+) test/psnr=([0-9.]+) dB$")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _strip_times(out: str) -> str:
    return re.sub(r"\([0-9.]+s\)", "", out)


def test_a_short_run_lowers_val_mse_and_reports_psnr(capsys):
    code, out, err = _run(capsys, "--preset", "AE", "--epochs", "3", "--set", "hidden=32")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("AE on digits (1, 8, 8), arch=mlp")
    epochs = [EPOCH.match(line) for line in lines[1:-1]]
    assert all(epochs) and [int(m[1]) for m in epochs] == [1, 2, 3], lines
    val = [float(m[2]) for m in epochs]
    assert val[2] < val[0], val
    assert "loss=" in lines[1] and "recon=" in lines[1]
    final = FINAL.match(lines[-1])
    assert final, lines[-1]
    mse, shown_psnr = float(final[1]), float(final[2])
    assert 0 < mse < 1
    # psnr is printed to 0.01 dB; the mse's 5 decimals move 10 log10(1/mse) by < 0.003 dB
    assert abs(shown_psnr - 10 * math.log10(1 / mse)) < 0.01


def test_a_run_is_reproducible_per_seed(capsys):
    args = ("--preset", "AE", "--epochs", "1", "--set", "hidden=16")
    _, a, _ = _run(capsys, *args, "--seed", "3")
    _, b, _ = _run(capsys, *args, "--seed", "3")
    _, c, _ = _run(capsys, *args, "--seed", "4")
    assert _strip_times(a) == _strip_times(b)
    assert _strip_times(a) != _strip_times(c)


@pytest.mark.parametrize("argv, names", [
    (["--preset", "NoSuchPreset"], ["unknown preset", "'NoSuchPreset'"]),
    (["--dataset", "imagenet"], ["unknown dataset", "'imagenet'"]),
    (["--dataset", "celebahq", "--data-root", "/no/such"], ["CelebA-HQ not found",
                                                            "/no/such/celebahq"]),
    (["--epochs", "0"], ["--epochs 0"]),
    (["--epochs", "-2"], ["--epochs -2"]),
    (["--set", "nosuchfield=1"], ["nosuchfield=1"]),
    (["--set", "beta"], ["'beta'", "FIELD=VALUE"]),
    (["--set", "beta=abc"], ["beta=abc", "float"]),
    (["--set", "latent_dim=1.5"], ["latent_dim=1.5", "int"]),
    (["--set", "latent_dim=0"], ["latent_dim=0"]),
    (["--preset", "VAE-fixed-γ", "--set", "sigma_x2=0"], ["sigma_x2=0"]),
    (["--preset", "AE", "--set", "sampling=unscented"], ["sampling='unscented'", "point"]),
    (["--preset", "VQ-VAE", "--set", "posterior=diagonal"], ["codebook='vq'"]),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, names):
    code, out, err = _run(capsys, *argv, "--epochs" if "--epochs" not in argv else "--seed", "1")
    assert code == 2
    assert out == ""  # nothing was built or trained
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: ")
    for name in names:
        assert name in err, (name, err)


def test_an_arch_that_does_not_fit_the_data_exits_2(capsys):
    code, out, err = _run(capsys, "--epochs", "1", "--set", "arch=conv28")
    assert code == 2
    assert err.count("\n") == 1 and "conv28" in err


@pytest.mark.parametrize("mse, data_range", [(0.01, 1.0), (0.0371, 1.0), (2.5, 255.0),
                                             (1e-6, 1.0)])
def test_psnr_matches_numpy(mse, data_range):
    assert psnr(mse, data_range) == pytest.approx(10 * np.log10(data_range ** 2 / mse),
                                                  rel=1e-12)


def test_psnr_of_images_matches_skimage():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    mse = float(np.mean((x - y) ** 2))
    assert psnr(mse) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), rel=1e-9)
    assert psnr(0.01) == pytest.approx(20.0, abs=1e-12)
    assert psnr(0.0) == math.inf


def test_reconstruction_mse_is_the_mean_squared_error_of_the_mean_reconstruction():
    torch.manual_seed(0)
    model = models.build("VAE", (1, 8, 8), hidden=32, latent_dim=4)
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[48:] = 1.0  # a short last batch (of 2 at batch_size=16) with a much larger error
    model.eval()
    with torch.no_grad():
        err = (model.decode(model.encode(x)[0]) - x).pow(2)  # D(mu(x)), independent path
    direct = err.mean().item()
    # the per-pixel mean over the whole set, not the mean of the 4 batch means
    batch_means = [err[i:i + 16].mean().item() for i in range(0, 50, 16)]
    assert abs(np.mean(batch_means) - direct) > 0.01 * direct
    got = reconstruction_mse(model, x, batch_size=16)
    assert got == pytest.approx(direct, rel=1e-5)
    assert reconstruction_mse(model, x) == pytest.approx(direct, rel=1e-5)
    # deterministic although the VAE draws z in training
    model.train()
    assert reconstruction_mse(model, x, batch_size=16) == got


def test_module_entry_point_runs_in_a_subprocess():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "engine.train", "--preset", "RAE", "--epochs", "1",
         "--set", "hidden=16"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test/psnr" in proc.stdout
    assert FINAL.match(proc.stdout.strip().splitlines()[-1])
