"""A short training run on the embedded digits lowers the loss and the reconstruction error."""
from __future__ import annotations

import pytest
import torch

import models
from engine.data import load_digits
from engine.train import reconstruction_mse, train_epoch


@pytest.mark.parametrize("preset", ["VAE", "RAE-GP", "UAE", "Iso-I", "Diag-D", "VQ-VAE",
                                    "2-Stage-VAE", "WAE-MMD"])
def test_a_few_epochs_lower_the_loss(preset):
    data = load_digits()
    torch.manual_seed(0)
    model = models.build(preset, data.image_shape)
    opt = model.make_optimizer()
    gen = torch.Generator().manual_seed(0)
    val_before = reconstruction_mse(model, data.val.images)
    losses = [train_epoch(model, opt, data.train.images, 64, gen)["loss"] for _ in range(6)]
    val_after = reconstruction_mse(model, data.val.images)
    assert losses[-1] < losses[0], losses
    if preset != "Diag-D":
        assert val_after < 0.8 * val_before, (val_before, val_after)
    # Diag-D by MLE (Takida G.17) is 1/2 sum_i log((x_i - x_hat_i)^2 + eps) per input from one
    # z draw: on digits, whose background is exactly 0, saturating those pixels earns more
    # than fitting the strokes, so its loss falls while its MSE need not.
