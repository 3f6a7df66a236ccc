"""Variational autoencoders: the inputs are the targets, the loss is the negative ELBO.

The model returns (reconstruction, mean, log_variance); the default loss `elbo` is the
reconstruction error plus beta times the KL divergence, per sample. The loop needs nothing
special: only the data's targets change (they become the inputs, see `prepare_data`).

Metrics, per sample (beta = 1, whatever the loss's beta): `elbo` (higher is better),
`reconstruction` (sum of squared errors on standardized inputs) and `kl`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from torchloom.losses import kl_divergence, reconstruction_error
from torchloom.tasks.base import Task


class VariationalAutoencoder(Task):
    """A VAE on any data's inputs (its labels, if any, are not used)."""

    name = "vae"
    default_loss = "elbo"
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

    def prepare_data(self, data):
        """The same data with each split's targets replaced by its inputs (no copy)."""

        def autoencode(split):
            return None if split is None else replace(split, targets=split.features)

        return replace(
            data, train=autoencode(data.train), val=autoencode(data.val), test=autoencode(data.test)
        )

    def predict(self, outputs) -> dict[str, torch.Tensor]:
        reconstruction, mean, log_variance = outputs
        return {"reconstruction": reconstruction.float(), "mean": mean.float()}

    def callbacks(self, run_dir, data) -> list:
        from torchloom.tasks.generation import SampleGrids

        held_out = data.val or data.test or data.train
        inputs = held_out.features[:50]
        return [SampleGrids(run_dir, every_epoch=False, inputs=inputs, preprocess=data.preprocess)]
