"""The decoder-regularizer axis (weight gamma): smoothness of the decoder in z.

Each penalty is a gradient and a value of it. The paper's take g = d ||D(z)||^2 / dz at the
decoded latents (S, B, D): RAE's authors' code differentiates the squared decoder output with
respect to z (one backward pass instead of the full Jacobian); we do the same. The UAE
authors' code takes g = d sum(D(mu)) / d mu at the posterior mean instead, and its unsquared
norm. "weight_decay" (RAE-L2) is no loss term: it is the weight decay of the decoder's
optimizer parameter group (`GaussianAutoencoder.param_groups`); what the UAE authors' code
calls "weight_decay" is a loss term on the decoder's weights themselves, the sum of their
spectral norms: exactly, by an SVD of every layer ("spectral_norm_sum", as the code computes
it), or by power iteration with a persistent vector per layer ("spectral_norm_sum_power", the
same value to 1e-3 after warm-up at a sixth of the step's cost; RAE-L2-code's).

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
    return sum(torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), ord=2)
               for m in _weighted(decoder))


def _weighted(decoder: nn.Module) -> list[nn.Module]:
    return [m for m in decoder.modules() if isinstance(m, WEIGHTED_LAYERS)]


# per training step, from the last step's vector: measured on the 8x8 digits over 200 steps
# after the warm-up, σ̂1 within 4.7e-4 of the SVD's at one, 2.3e-4 at two, and the gradient's
# cosine to u1 v1^T >= 0.9996 at two wherever σ1 stands 5% above σ2 (where they nearly tie, the
# top pair's gradient itself jumps between them)
POWER_ITERATIONS = 2
# training steps whose vector is the exact SVD's: Adam's first steps move every weight by about
# lr, and the near-equal top singular values of fresh weights trade places faster than power
# iteration follows (measured, RAE-L2-code at 8x8: 8% off in the first 10 steps at one iteration
# a step, 4% at four); by ~200 steps the top value has separated
POWER_WARMUP_STEPS = 200
SPECTRAL_STEP = "spectral_step"  # each weighted layer's buffer: the training steps it has seen
SPECTRAL_U = "spectral_u"  # each weighted layer's buffer: its estimated top left singular vector


def _power_iterate(w: torch.Tensor, u: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` power iterations of W W^T from u: the top left singular vector's estimate. w:
    (out, in), u: (out,), no graph."""
    for _ in range(steps):
        v = nn.functional.normalize(w.t() @ u, dim=0, eps=1e-12)  # (in,)
        u = nn.functional.normalize(w @ v, dim=0, eps=1e-12)  # (out,)
    return u


def _top_left_singular_vector(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svd(w, full_matrices=False).U[:, 0].contiguous()  # (out,)


def prepare_power_vectors(decoder: nn.Module) -> None:
    """Give every weighted layer its persistent vector u and its step count (buffers: in the
    state dict, so a checkpoint carries them and a resumed trial continues exactly), u the
    initial weights' top left singular vector. Draws nothing from the random stream, so the
    model's parameters start exactly as with the SVD penalty."""
    for m in _weighted(decoder):
        with torch.no_grad():
            u = _top_left_singular_vector(m.weight.detach().reshape(m.weight.shape[0], -1))
        m.register_buffer(SPECTRAL_U, u)
        m.register_buffer(SPECTRAL_STEP, torch.zeros((), dtype=torch.long))
        # the count the step decides on, kept on the host so that a training batch reads
        # nothing back from the device; the buffer (the state dict's copy) is read once, when
        # a state dict is loaded
        m.spectral_steps_seen = 0
        m.register_load_state_dict_post_hook(_steps_from_buffer)


def _steps_from_buffer(module: nn.Module, incompatible_keys) -> None:
    module.spectral_steps_seen = int(getattr(module, SPECTRAL_STEP))


def spectral_norm_sum_power(decoder: nn.Module) -> torch.Tensor:
    """The sum of the decoder layers' spectral norms as `spectral_norm_sum`, each σ1(W)
    estimated by power iteration as torch.nn.utils.parametrizations.spectral_norm does (Miyato
    et al. 2018): two iterations per training step from the layer's persistent vector u (after
    POWER_WARMUP_STEPS steps whose u is the SVD's; in eval mode u stays as it is, so validation
    changes nothing), then σ̂1 = u^T W v with v = W^T u / ||W^T u||, u and v held constant,
    whose gradient u v^T is the exact SVD's u1 v1^T where u has converged. A few matrix-vector
    products per layer instead of an SVD. 0-dim."""
    layers = _weighted(decoder)
    device = layers[0].weight.device if layers else torch.device("cpu")
    total = torch.zeros((), device=device)
    with torch.autocast(device.type, enabled=False):  # float32 under AMP, as the SVD is
        for m in layers:
            w = m.weight.reshape(m.weight.shape[0], -1)  # (out, in), the weights' dtype
            with torch.no_grad():
                u = getattr(m, SPECTRAL_U)
                if m.training:
                    u.copy_(_top_left_singular_vector(w.detach())
                            if m.spectral_steps_seen < POWER_WARMUP_STEPS
                            else _power_iterate(w.detach(), u, POWER_ITERATIONS))
                    m.spectral_steps_seen += 1
                    getattr(m, SPECTRAL_STEP).add_(1)  # on the device, not read
                u = u.clone()  # the graph keeps this step's u, whatever the next step writes
                v = nn.functional.normalize(w.detach().t() @ u, dim=0, eps=1e-12)
            total = total + u @ (w @ v)
    return total


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
    # what the decoder needs before its first step (state of its own), given the decoder
    prepare: Callable[[nn.Module], None] | None = None

    def __call__(self, decoder: nn.Module, decode, z, x_hat, post, weights) -> torch.Tensor:
        return self.value(decoder)


DECODER_PENALTIES: dict[str, Penalty | WeightPenalty | None] = {
    "none": None,
    "gradient_penalty": Penalty(_at_samples, gradient_penalty),
    "eig_gradient_penalty": Penalty(_at_samples, eig_gradient_penalty),
    "eig_gradient_norm_at_mean": Penalty(mean_output_sum_gradient, eig_gradient_norm),
    "gradient_norm_at_mean": Penalty(mean_output_sum_gradient, gradient_norm),
    "spectral_norm_sum": WeightPenalty(spectral_norm_sum),
    "spectral_norm_sum_power": WeightPenalty(spectral_norm_sum_power, prepare_power_vectors),
    "weight_decay": None,  # an optimizer rule, see the module docstring
}
