"""Generative tasks: the VAE's ELBO, the GAN's own train step, exact resume, PNG grids, samples
from the CLI, and the quality of generated digits judged by a classifier trained on real ones."""

from __future__ import annotations

import copy
import math
import signal

import numpy as np
import pytest
import torch
from conftest import run_cli

import torchloom as tl
from torchloom.api import fit_config, resume
from torchloom.config import ConfigError
from torchloom.errors import TorchloomError
from torchloom.losses import ElboLoss, GanLoss
from torchloom.tasks import make_task
from torchloom.train.callbacks import Callback, TrainingInterrupted
from torchloom.train.step import GradientClipper, Update


@pytest.fixture(scope="module")
def digit_images():
    return tl.data.load("digits", shape="image")


def test_elbo_loss_is_reconstruction_plus_beta_kl_as_written_by_hand():
    torch.manual_seed(0)
    inputs = torch.randn(5, 1, 8, 8)
    reconstruction, mean, log_variance = (
        torch.randn(5, 1, 8, 8),
        torch.randn(5, 3),
        torch.randn(5, 3),
    )
    squared = ((reconstruction - inputs) ** 2).flatten(1).sum(1)
    kl = 0.5 * (mean**2 + log_variance.exp() - 1 - log_variance).sum(1)
    got = ElboLoss(beta=0.25)((reconstruction, mean, log_variance), inputs)
    torch.testing.assert_close(got, (squared + 0.25 * kl).mean())
    with pytest.raises(TypeError, match=r"expected model outputs \(reconstruction, mean"):
        ElboLoss()(torch.zeros(5, 10), inputs)
    with pytest.raises(TypeError, match=r"expected \(batch, 2\) discriminator logits"):
        GanLoss()(torch.zeros(5, 10), inputs)


def test_gan_step_equals_plain_pytorch_with_two_optimizers():
    """One Adam over both networks, stepped twice a batch, moves each network exactly as two
    separate Adams would (the DCGAN recipe in plain PyTorch)."""
    torch.manual_seed(0)
    model = tl.models.build("gan", latent=4, hidden=[16])
    tl.models.materialize(model, torch.zeros(2, 64), None)
    plain = copy.deepcopy(model)
    task = make_task("gan", num_outputs=10)
    update = Update(torch.optim.Adam(model.parameters(), lr=0.01))
    optimizer_d = torch.optim.Adam(plain.discriminator.parameters(), lr=0.01)
    optimizer_g = torch.optim.Adam(plain.generator.parameters(), lr=0.01)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for step in range(3):
        real = torch.randn(8, 64)
        torch.manual_seed(step)
        loss = task.train_step(model, real, None, update)

        torch.manual_seed(step)
        fake = plain.generator(torch.randn(8, 4))
        optimizer_d.zero_grad()
        real_logits, fake_logits = plain.discriminator(real), plain.discriminator(fake.detach())
        loss_d = bce(real_logits, torch.ones_like(real_logits)) + bce(
            fake_logits, torch.zeros_like(fake_logits)
        )
        loss_d.backward()
        optimizer_d.step()
        optimizer_g.zero_grad()
        fake_logits = plain.discriminator(fake)
        bce(fake_logits, torch.ones_like(fake_logits)).backward()
        optimizer_g.step()
        torch.testing.assert_close(loss, loss_d.detach())
    for (name, got), want in zip(
        model.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)


def test_gan_step_clips_each_update_as_plain_pytorch_would():
    """The task's own step is handed the loop's update: with clip_value, each of its two
    updates is clipped exactly as clip_grad_value_ before each optimizer's step in plain
    PyTorch."""
    torch.manual_seed(0)
    model = tl.models.build("gan", latent=4, hidden=[16])
    tl.models.materialize(model, torch.zeros(2, 64), None)
    plain = copy.deepcopy(model)
    task = make_task("gan", num_outputs=10)
    clip = GradientClipper(max_value=1e-3)
    update = Update(torch.optim.SGD(model.parameters(), lr=10.0), clip=clip)
    optimizer_d = torch.optim.SGD(plain.discriminator.parameters(), lr=10.0)
    optimizer_g = torch.optim.SGD(plain.generator.parameters(), lr=10.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    real = torch.randn(8, 64)
    torch.manual_seed(1)
    task.train_step(model, real, None, update)
    torch.manual_seed(1)
    fake = plain.generator(torch.randn(8, 4))
    real_logits, fake_logits = plain.discriminator(real), plain.discriminator(fake.detach())
    (
        bce(real_logits, torch.ones_like(real_logits))
        + bce(fake_logits, torch.zeros_like(fake_logits))
    ).backward()
    torch.nn.utils.clip_grad_value_(plain.discriminator.parameters(), 1e-3)
    optimizer_d.step()
    optimizer_g.zero_grad()
    fake_logits = plain.discriminator(fake)
    bce(fake_logits, torch.ones_like(fake_logits)).backward()
    torch.nn.utils.clip_grad_value_(plain.generator.parameters(), 1e-3)
    optimizer_g.step()
    for (name, got), want in zip(
        model.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)


def test_a_gan_trains_in_bf16_with_clipping_and_skipping(digit_images):
    run = tl.fit(
        tl.models.build("gan", hidden=[32]), digit_images, task="gan", epochs=1,
        precision="bf16", clip_norm=1.0, nonfinite="skip", progress=False,
    )  # fmt: skip
    assert math.isfinite(run.history[-1]["train/loss"])
    assert math.isfinite(run.history[-1]["val/loss"])


class InterruptAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state) -> None:
        if state.step == self.step:
            state.interrupt(signal.SIGINT)  # as Ctrl-C would


def test_gan_run_resumed_mid_epoch_equals_the_uninterrupted_one(tmp_path):
    options = dict(
        task="gan",
        optimizer={"name": "adam", "lr": 0.001, "betas": [0.5, 0.999]},
        epochs=2,
        batch_size=256,
        progress=False,
        diagnostics_every=0,
        tensorboard=False,
    )
    data = tl.data.load("digits", val=0.1, test=0)
    whole = tl.fit(
        tl.models.build("gan", hidden=[32]), data, output_dir=str(tmp_path / "a"), **options
    )
    with pytest.raises(TrainingInterrupted):
        tl.fit(
            tl.models.build("gan", hidden=[32]),
            data,
            output_dir=str(tmp_path / "b"),
            callbacks=[InterruptAtStep(9)],  # mid epoch 2 (6 steps an epoch)
            **options,
        )
    resumed = resume(next((tmp_path / "b").iterdir()))
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [h["val/loss"] for h in resumed.history] == [h["val/loss"] for h in whole.history]
    # Both networks' optimizer moments came back: the generator moved after the resume too.
    assert len(list((whole.dir / "plots").glob("samples-epoch-*.png"))) == 2


def test_vae_and_gan_refuse_what_they_cannot_use(digit_images):
    with pytest.raises(ConfigError, match="trainer.accumulate: task 'gan' runs its own training"):
        tl.fit("gan", digit_images, task="gan", accumulate=2, epochs=1, progress=False)
    with pytest.raises(
        TorchloomError,
        match="4 stride-2 stages need height and width divisible by 16, got 8x8. Use fewer",
    ):
        tl.fit(tl.models.build("conv_vae", channels=[8, 8, 8, 8]), digit_images, task="vae")
    with pytest.raises(TorchloomError, match="model.latent: expected a whole number >= 1, got 0"):
        tl.models.build("vae", latent=0)


def test_vae_run_writes_grids_and_the_cli_writes_samples(tmp_path):
    overrides = ["trainer.epochs=2", f"output.dir={tmp_path}", "output.name=vae"]
    fit_config("examples/digits_vae.yaml", overrides + ["trainer.progress=false"])
    from matplotlib.image import imread

    run_dir = tmp_path / "vae"
    # 100 samples as 10x10 tiles of 32x32 (8x8 upscaled) with 1-pixel gaps.
    assert imread(run_dir / "plots" / "samples.png").shape[:2] == (329, 329)
    assert imread(run_dir / "plots" / "reconstructions.png").shape[:2] == (
        329,
        329,
    )  # 5 pairs of rows: real, reconstruction
    predicted = run_cli("predict", str(run_dir), "--samples", "30", "-o", str(tmp_path / "s.csv"))
    assert predicted.returncode == 0, predicted.stderr
    import pandas as pd

    frame = pd.read_csv(tmp_path / "s.csv")
    assert frame.shape == (30, 64)
    assert 2 < frame.to_numpy().mean() < 8  # pixel units (0..16; digits average ~4.9)
    assert imread(tmp_path / "s.png").shape[:2] == (98, 329)
    run = tl.load_run(run_dir)
    np.testing.assert_array_equal(run.sample(30), frame.to_numpy(np.float32).reshape(30, 1, 8, 8))
    assert set(run.evaluate("test")) == {"loss", "elbo", "reconstruction", "kl"}
    assert run.predict(np.zeros((3, 64)))["reconstruction"].shape == (3, 1, 8, 8)


@pytest.mark.slow
def test_generated_digits_are_recognizable_and_varied(digit_images):
    """Of 1,000 digits from a VAE and from a DCGAN, a classifier trained on real digits is
    confident (max probability >= 0.9) on >= 57% (VAE) / >= 51% (DCGAN), and every class makes
    up >= 4% / >= 3%. Seeds 0-4 reach 59-63% confident, classes >= 4.5% (VAE) and 53-59%,
    classes >= 3.5% (DCGAN); the README says the same."""
    judge = tl.fit("mlp", digit_images, epochs=30, optimizer="adam", batch_size=64, progress=False)
    assert judge.evaluate("test")["accuracy"] > 0.95
    settings = {
        "vae": (tl.models.build("vae", latent=8), {"name": "adam", "lr": 0.002}, 30, 0.57, 0.04),
        "gan": (
            tl.models.build("dcgan"),
            {"name": "adam", "lr": 0.0005, "betas": [0.5, 0.999]},
            20,
            0.51,
            0.03,
        ),
    }
    for task, (model, optimizer, epochs, least_confident, least_share) in settings.items():
        run = tl.fit(
            model,
            digit_images,
            task=task,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=64,
            progress=False,
            diagnostics_every=0,
        )
        samples = run.sample(1000, seed=1, scaled=True)  # in the space the judge was trained in
        probabilities = judge.predict(samples, preprocessed=True)["probabilities"]
        confident = (probabilities.max(axis=1) >= 0.9).mean()
        shares = np.bincount(probabilities.argmax(axis=1), minlength=10) / 1000
        assert confident >= least_confident, (task, confident)
        assert shares.min() >= least_share, (task, shares)
