"""The decoder-regularizer axis (weight gamma): smoothness of the decoder in z.

Each penalty is a gradient and a value of it. The paper's take g = d ||D(z)||^2 / dz at the
decoded latents (S, B, D): RAE's authors' code differentiates the squared decoder output with
respect to z (one backward pass instead of the full Jacobian); we do the same. The UAE
authors' code takes g = d sum(D(mu)) / d mu at the posterior mean instead, and its unsquared
norm. "weight_decay" (RAE-L2) is no loss term: it is the weight decay of the decoder's
optimizer parameter group (`GaussianAutoencoder.param_groups`); what the UAE authors' code
calls "weight_decay" is a loss term on the decoder's weights themselves, the sum of their
spectral norms ("spectral_norm_sum").

Every entry of DECODER_PENALTIES is called as penalty(decoder, decode, z, x_hat, post,
weights) and returns the unweighted term per input (B,) or for the batch (0-dim).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from .posteriors import Posterior


def decoder_output_gradient(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                            x_hat: torch.Tensor | None = None) -> torch.Tensor:
    """g = d (sum over outputs of D(z)^2) / dz, kept in the graph for training. (S, B, D).

    Per input this is 2 J(z)^T D(z); under torch.no_grad (validation) it is still computed,
    by decoding z once more with gradients on.
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if x_hat is None or not z.requires_grad:
            z = z.detach().requires_grad_(True)
            x_hat = decode(z)
        (g,) = torch.autograd.grad(x_hat.pow(2).sum(), z, create_graph=create_graph)
    return g


def gradient_penalty(g: torch.Tensor, weights: torch.Tensor, post: Posterior) -> torch.Tensor:
    """||grad_z ||D(z)||^2||^2 per input, averaged over the decoded latents (RAE-GP, UAE Eq. 15)."""
    return (weights[:, None] * g.pow(2).sum(-1)).sum(0)  # (B,)


def eig_gradient_penalty(g: torch.Tensor, weights: torch.Tensor, post: Posterior) -> torch.Tensor:
    """lambda_max(Sigma) ||grad_z D(z)||^2 (UAE Eq. 11), lambda_max approximated by the largest
    diagonal entry of Sigma as the paper does (exact for a diagonal posterior)."""
    lambda_max = post.variance.max(-1).values  # (B,)
    return lambda_max * gradient_penalty(g, weights, post)


def mean_output_sum_gradient(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                             x_hat: torch.Tensor, post: Posterior) -> torch.Tensor:
    """g = d (sum over outputs of D(mu)) / d mu at the posterior mean, in the graph, (1, B, D):
    the UAE authors' code (boschresearch/unscented-autoencoder, models/fullcov_vae.py l. 296-301
    `grad_input = mu`, `grad_output = self.decode(mu)`; models/models_utils.py l. 57-66)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        mu = post.mean
        if not mu.requires_grad:  # under no_grad (validation): decode a leaf copy
            mu = mu.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(decode(mu[None]).sum(), mu, create_graph=create_graph)
    return g[None]


LAMBDA_CAP = 100.0  # the UAE code's clamp on the eigenvalue weight (models_utils.py l. 84)


def eig_gradient_norm(g: torch.Tensor, weights: torch.Tensor, post: Posterior) -> torch.Tensor:
    """min(max_ij Sigma_ij, 100) ||g||_2, unsquared, per input: the UAE authors' code's
    eig_grad_norm (models/models_utils.py l. 68-85; the largest entry of a covariance is its
    largest diagonal entry, the paper's approximation of lambda_max). g: (1, B, D)."""
    lambda_max = post.covariance.amax(dim=(-2, -1)).clamp(max=LAMBDA_CAP)  # (B,)
    return lambda_max * g[0].norm(dim=-1)


def gradient_norm(g: torch.Tensor, weights: torch.Tensor, post: Posterior) -> torch.Tensor:
    """||g||_2, unsquared, per input: the UAE authors' code's "grad_norm" (models/models_utils.py
    l. 52-71), which its RAE takes at the code z = mu itself (models/rae.py l. 161-165). With
    g = d sum D(mu) / d mu (mean_output_sum_gradient). g: (1, B, D)."""
    return g[0].norm(dim=-1)


WEIGHTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def spectral_norm_sum(decoder: nn.Module) -> torch.Tensor:
    """sum over the decoder's linear and convolutional layers of ||W||_2, the largest singular
    value of the weight viewed as (W.shape[0], -1): what the UAE authors' code calls
    "weight_decay" (models/models_utils.py l. 37-42, `torch.linalg.norm(l.weight.view(
    l.weight.shape[0], -1), ord=2)` over RAE.get_decoder_layers, models/rae.py l. 177-190),
    weight 1e-6 in configs_fashion_mnist/rae.yaml. Not an L2 penalty: its gradient is
    u1 v1^T per layer (the top singular vectors), whatever the other singular values. 0-dim."""
    layers = [m for m in decoder.modules() if isinstance(m, WEIGHTED_LAYERS)]
    return sum(torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), ord=2)
               for m in layers)


def _at_samples(decode, z, x_hat, post) -> torch.Tensor:
    return decoder_output_gradient(decode, z, x_hat)


class Penalty(NamedTuple):
    """A penalty on the decoder's gradient in z: where to take it, and its value there."""
    gradient: Callable[..., torch.Tensor]  # (decode, z, x_hat, post) -> g (S', B, D)
    value: Callable[[torch.Tensor, torch.Tensor, Posterior], torch.Tensor]  # g, weights -> (B,)

    def __call__(self, decoder: nn.Module, decode, z, x_hat, post, weights) -> torch.Tensor:
        return self.value(self.gradient(decode, z, x_hat, post), weights, post)


class WeightPenalty(NamedTuple):
    """A penalty on the decoder's weights, the same for every input of the batch."""
    value: Callable[[nn.Module], torch.Tensor]  # decoder -> 0-dim

    def __call__(self, decoder: nn.Module, decode, z, x_hat, post, weights) -> torch.Tensor:
        return self.value(decoder)


DECODER_PENALTIES: dict[str, Penalty | WeightPenalty | None] = {
    "none": None,
    "gradient_penalty": Penalty(_at_samples, gradient_penalty),
    "eig_gradient_penalty": Penalty(_at_samples, eig_gradient_penalty),
    "eig_gradient_norm_at_mean": Penalty(mean_output_sum_gradient, eig_gradient_norm),
    "gradient_norm_at_mean": Penalty(mean_output_sum_gradient, gradient_norm),
    "spectral_norm_sum": WeightPenalty(spectral_norm_sum),
    "weight_decay": None,  # an optimizer rule, see the module docstring
}
