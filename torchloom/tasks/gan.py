"""Generative adversarial networks: a generator and a discriminator, trained by the task's own
step with one optimizer over both (two updates per batch, each through the loop's `Update`).

The model (`gan` or `dcgan`) holds `generator` and `discriminator`; its forward returns
(batch, 2) discriminator logits for real inputs and as many generated samples, so evaluation
runs through the usual `Evaluator`: `loss` is the discriminator's loss, and the metrics are
`generator_loss` (non-saturating, -log D(G(z))), `real_accuracy` and `fake_accuracy` (how often
the discriminator is right on each kind).

Two updates, one optimizer: PyTorch's optimizers skip parameters whose `.grad` is None. The
discriminator's update leaves the generator's gradients at None (its fakes are detached), and
the generator's update sets the discriminator's to None before stepping, so each `step()` moves
one network only. The optimizer's state (both networks' moments) is one state dict, which
checkpoints save and restore as for any task: a resumed GAN run equals the uninterrupted one.
"""

from __future__ import annotations

import torch

from torchloom.losses import discriminator_loss, generator_loss
from torchloom.tasks.base import Task
from torchloom.train.step import Update


class Adversarial(Task):
    """A GAN on any data's inputs (its labels, if any, are not used)."""

    name = "gan"
    default_loss = "gan"
    losses = ("gan",)
    targets_are = "real against generated samples"
    uses_targets = False

    def metrics(self):
        from torchmetrics import MeanMetric, MetricCollection

        return MetricCollection({name: MeanMetric() for name in self.metric_names()})

    def metric_names(self) -> list[str]:
        return ["generator_loss", "real_accuracy", "fake_accuracy"]

    def update_metrics(self, metrics, outputs, targets, inputs) -> None:
        real_logits, fake_logits = outputs[:, 0], outputs[:, 1]  # (batch,) each
        metrics["generator_loss"].update(generator_loss(fake_logits), weight=len(outputs))
        metrics["real_accuracy"].update((real_logits > 0).float())
        metrics["fake_accuracy"].update((fake_logits < 0).float())

    def train_step(self, model, inputs, targets, update: Update) -> torch.Tensor:
        """One batch: a discriminator update, then a generator update, each through the loop's
        `update` (mixed precision, clipping, non-finite skipping). Returns the discriminator's
        loss (what `train/loss` and `val/loss` report)."""
        with update.autocast():
            fake = model.generator(model.noise(len(inputs)))  # (batch, *sample_shape)

        # 1. Discriminator: real -> 1, generated -> 0. Detached fakes: no generator gradients.
        update.zero_grad()
        with update.autocast():
            real_logits = model.discriminator(inputs)[:, 0]  # (batch,)
            fake_logits = model.discriminator(fake.detach())[:, 0]
            loss = discriminator_loss(real_logits, fake_logits)
        update.backward(loss)
        update.step(loss)  # the generator's grads are None: only the discriminator moves

        # 2. Generator: make the (just updated) discriminator call its samples real.
        update.zero_grad()
        with update.autocast():
            fooled = generator_loss(model.discriminator(fake)[:, 0])
        update.backward(fooled)
        for parameter in model.discriminator.parameters():
            parameter.grad = None  # the discriminator is not updated on the generator's loss
        update.step(fooled)
        return loss.detach()

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        # The discriminator's belief that each input is real.
        return {"real_probability": torch.sigmoid(outputs[:, 0].float())}

    def callbacks(self, run_dir, data) -> list:
        from torchloom.tasks.generation import SampleGrids

        return [SampleGrids(run_dir, every_epoch=True, preprocess=data.preprocess)]
