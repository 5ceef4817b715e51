"""The decoder-regularizer axis (weight gamma): smoothness of the decoder in z.

Penalties take g = d ||D(z)||^2 / dz at the decoded latents (S, B, D). RAE's authors' code
differentiates the squared decoder output with respect to z (one backward pass instead of the
full Jacobian); we do the same. "weight_decay" (RAE-L2) is no loss term: it is the weight decay
of the decoder's optimizer parameter group (`GaussianAutoencoder.param_groups`).
"""
from __future__ import annotations

from typing import Callable

import torch

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


DECODER_PENALTIES: dict[str, Callable | None] = {
    "none": None,
    "gradient_penalty": gradient_penalty,
    "eig_gradient_penalty": eig_gradient_penalty,
    "weight_decay": None,  # an optimizer rule, see the module docstring
}
