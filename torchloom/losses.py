"""Losses of the generative tasks: the VAE's ELBO and the GAN's discriminator loss.

Both are plain `nn.Module`s called as `loss(outputs, targets)`, like PyTorch's own losses, so the
one training loop and the `Evaluator` use them unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_error(reconstruction: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors per sample, shape (batch,): the negative log-likelihood of a
    Gaussian decoder with variance 1/2, up to a constant (inputs are standardized)."""
    difference = (reconstruction - inputs).reshape(len(inputs), -1)
    return difference.pow(2).sum(dim=1)


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, I)) per sample, shape (batch,)."""
    return -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(dim=1)


class ElboLoss(nn.Module):
    """The negative ELBO per sample, averaged over the batch: reconstruction + beta * KL.

    Args:
        beta: the KL weight (1.0: the ELBO itself; below 1 sharper reconstructions, above 1 a
            smoother latent space, as in beta-VAE).

    Called with `outputs = (reconstruction, mean, log_variance)` from a VAE and `targets` the
    inputs themselves.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        if not isinstance(beta, int | float) or isinstance(beta, bool) or beta < 0:
            raise ValueError(f"loss.beta: expected a number >= 0, got {beta!r}.")
        self.beta = float(beta)

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, tuple | list) or len(outputs) != 3:
            raise TypeError(
                "loss elbo: expected model outputs (reconstruction, mean, log_variance) from a "
                f"VAE, got {type(outputs).__name__}. Use model vae or conv_vae."
            )
        reconstruction, mean, log_variance = outputs
        error = reconstruction_error(reconstruction.float(), targets.float())
        divergence = kl_divergence(mean.float(), log_variance.float())
        return (error + self.beta * divergence).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the discriminator: real samples are 1, generated ones 0."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss: -log D(G(z)), which the generator minimizes."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class GanLoss(nn.Module):
    """The discriminator's loss on a GAN's outputs: (batch, 2) logits, column 0 for real inputs
    and column 1 for as many generated samples. `targets` are not used (labels, if any)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != 2:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else outputs
            raise TypeError(
                f"loss gan: expected (batch, 2) discriminator logits (real, generated), got "
                f"{shape}. Use model gan or dcgan."
            )
        return discriminator_loss(outputs[:, 0].float(), outputs[:, 1].float())
