"""Variational autoencoders: the inputs are the targets, the loss is the negative ELBO.

The model returns (reconstruction, mean, log_variance); the default loss `elbo` is the
reconstruction error plus beta times the KL divergence, per sample. The loop needs nothing
special: the task's loss reads the batch's inputs (`batch_loss`); the data stays as it is.

Metrics, per sample (beta = 1, whatever the loss's beta): `elbo` (higher is better),
`reconstruction` (sum of squared errors on standardized inputs) and `kl`.
"""

from __future__ import annotations

import torch
from torch import nn

from torchloom.losses import kl_divergence, reconstruction_error
from torchloom.tasks.base import BatchLoss, Task


class InputsLoss(BatchLoss):
    """The configured loss (`elbo`) between the model's outputs and the batch's inputs."""

    def __call__(self, outputs, inputs, targets) -> torch.Tensor:
        return self.criterion(outputs, inputs)


class VariationalAutoencoder(Task):
    """A VAE on any data's inputs (its labels, if any, are not used)."""

    name = "vae"
    default_loss = "elbo"
    losses = ("elbo",)
    targets_are = "the inputs themselves (an ELBO)"
    uses_targets = False

    def metrics(self):
        from torchmetrics import MeanMetric, MetricCollection

        return MetricCollection({name: MeanMetric() for name in self.metric_names()})

    def metric_names(self) -> list[str]:
        return ["elbo", "reconstruction", "kl"]

    def update_metrics(self, metrics, outputs, targets, inputs) -> None:
        reconstruction, mean, log_variance = outputs
        error = reconstruction_error(reconstruction.float(), inputs.float())  # (batch,)
        divergence = kl_divergence(mean.float(), log_variance.float())  # (batch,)
        metrics["elbo"].update(-(error + divergence))
        metrics["reconstruction"].update(error)
        metrics["kl"].update(divergence)

    def batch_loss(self, criterion: nn.Module) -> BatchLoss:
        return InputsLoss(criterion)

    def predict(self, outputs) -> dict[str, torch.Tensor]:
        reconstruction, mean, log_variance = outputs
        return {"reconstruction": reconstruction.float(), "mean": mean.float()}

    def callbacks(self, run_dir, data) -> list:
        from torchloom.tasks.generation import SampleGrids

        held_out = data.val or data.test or data.train
        inputs = held_out.features[:50]
        return [SampleGrids(run_dir, every_epoch=False, inputs=inputs, preprocess=data.preprocess)]
