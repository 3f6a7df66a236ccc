"""Generative models: VAEs (dense and convolutional) and GANs (dense and DCGAN-style).

Each is sized from the data: the layers are made on the first forward pass (the dry run that
`torchloom.models.materialize` does before training), from the shape of one sample. Every model
has `sample(count, generator=None) -> (count, *input_shape)` tensors in the data's (scaled)
space, which `Run.sample` and the PNG grids use.

    vae       Linear encoder -> (mean, log-variance) of a Gaussian latent -> Linear decoder
    conv_vae  stride-2 convolutions down, transposed convolutions up (1x8x8, 1x28x28, 3x32x32)
    gan       dense generator and discriminator
    dcgan     DCGAN (Radford et al. 2016): transposed convs + batch norm + ReLU up, strided
              convs + LeakyReLU(0.2) down, no pooling
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchloom.errors import TorchloomError


def _sizes(values, what: str) -> list[str]:
    if not isinstance(values, list | tuple) or not values:
        return [f"model.{what}: expected a non-empty list of whole numbers, got {values!r}."]
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    return [f"model.{what}: expected whole numbers >= 1, got {bad[0]!r}."] if bad else []


def generative_problems(options: dict) -> list[str]:
    """Option values a generative builder cannot use, before anything is built."""
    problems = []
    for key in ("hidden", "channels"):
        if key in options:
            problems += _sizes(options[key], key)
    latent = options.get("latent", 1)
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
        problems.append(f"model.latent: expected a whole number >= 1, got {latent!r}.")
    return problems


def _check(options: dict) -> None:
    problems = generative_problems(options)
    if problems:
        raise TorchloomError(" ".join(problems))


def _image_shape(shape: tuple[int, ...], depth: int, name: str) -> tuple[int, int, int]:
    """(channels, height, width) with height and width divisible by 2**depth, or an error
    (raised in the dry run, which adds what to check; hence no final period)."""
    if len(shape) != 3:
        raise TorchloomError(
            f"model {name}: expects images (batch, channels, height, width), got samples of "
            f"shape {shape}. Load image data (digits with shape: image), or use a dense model"
        )
    factor = 2**depth
    if shape[1] % factor or shape[2] % factor:
        raise TorchloomError(
            f"model {name}: {depth} stride-2 stages need height and width divisible by "
            f"{factor}, got {shape[1]}x{shape[2]}. Use fewer channel entries"
        )
    return shape


class Generative(nn.Module):
    """Shared parts: the latent size, the sample shape (set on the first call), sampling."""

    def __init__(self, latent: int):
        super().__init__()
        self.latent = latent
        self.sample_shape: tuple[int, ...] | None = None

    def _ensure_built(self, inputs: torch.Tensor) -> None:
        if self.sample_shape is None:
            self.sample_shape = tuple(inputs.shape[1:])
            self.build(self.sample_shape)
            self.to(inputs.device)

    def build(self, shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        if generator is not None and generator.device != device:
            # A CPU generator (reproducible everywhere) draws, then the noise moves.
            return torch.randn(count, self.latent, generator=generator).to(device)
        return torch.randn(count, self.latent, generator=generator, device=device)

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` new samples (count, *sample_shape), drawn from the prior in eval mode."""
        if self.sample_shape is None:
            raise TorchloomError("model: sample() before the model saw data; train it first.")
        was_training = self.training
        self.eval()
        samples = self.decode(self.noise(count, generator))
        self.train(was_training)
        return samples


def _dense(sizes: list[int], activation) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), activation()]
    return layers


class VAE(Generative):
    """A variational autoencoder; `forward(x)` returns (reconstruction, mean, log_variance).

    In training mode the decoder reads z = mean + sigma * noise (the reparameterization trick);
    in eval mode it reads the mean, so reconstructions are deterministic.
    """

    def __init__(self, latent: int, hidden: list[int], channels: list[int] | None):
        super().__init__(latent)
        self.hidden, self.channels = list(hidden), channels and list(channels)

    def build(self, shape: tuple[int, ...]) -> None:
        if self.channels:  # convolutional: (c, h, w) -> ... -> (last, h / 2**k, w / 2**k)
            channels, height, width = _image_shape(shape, len(self.channels), "conv_vae")
            down, widths = [], [channels, *self.channels]
            for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
                down += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), nn.ReLU()]
            scale = 2 ** len(self.channels)
            inner = (self.channels[-1], height // scale, width // scale)
            up: list[nn.Module] = []
            for width_in, width_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
                up += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1), nn.ReLU()]
            up.pop()  # no activation on the output: standardized pixels are unbounded
            self.encoder = nn.Sequential(*down, nn.Flatten())
            features = math.prod(inner)
            self.decoder = nn.Sequential(
                nn.Linear(self.latent, features), nn.ReLU(), nn.Unflatten(1, inner), *up
            )
        else:  # dense: flattened samples
            features = math.prod(shape)
            self.encoder = nn.Sequential(nn.Flatten(), *_dense([features, *self.hidden], nn.ReLU))
            sizes = [self.latent, *self.hidden[::-1]]
            self.decoder = nn.Sequential(
                *_dense(sizes, nn.ReLU),
                nn.Linear(sizes[-1], features),
                nn.Unflatten(1, shape),
            )
            features = self.hidden[-1]
        self.to_mean = nn.Linear(features, self.latent)
        self.to_log_variance = nn.Linear(features, self.latent)

    def encode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_variance) of q(z | x), each (batch, latent)."""
        self._ensure_built(inputs)
        hidden = self.encoder(inputs)  # (batch, features)
        return self.to_mean(hidden), self.to_log_variance(hidden)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)  # (batch, *sample_shape)

    def forward(self, inputs: torch.Tensor):
        mean, log_variance = self.encode(inputs)
        if self.training:
            latent = mean + torch.randn_like(mean) * (0.5 * log_variance).exp()
        else:
            latent = mean
        return self.decode(latent), mean, log_variance


class GAN(Generative):
    """A generator and a discriminator in one module (one state dict, one checkpoint).

    `forward(x)` returns (batch, 2) discriminator logits: column 0 for the real `x`, column 1
    for as many fresh generated samples. Training goes through the `gan` task's own step.
    """

    def __init__(self, latent: int, hidden: list[int], channels: list[int] | None):
        super().__init__(latent)
        self.hidden, self.channels = list(hidden), channels and list(channels)

    def build(self, shape: tuple[int, ...]) -> None:
        if self.channels:  # DCGAN: the generator mirrors the discriminator
            channels, height, width = _image_shape(shape, len(self.channels), "dcgan")
            widths = [channels, *self.channels]
            scale = 2 ** len(self.channels)
            inner = (self.channels[-1], height // scale, width // scale)
            down: list[nn.Module] = []
            for index, width_in, width_out in zip(
                range(len(widths) - 1), widths[:-1], widths[1:], strict=True
            ):
                down.append(nn.Conv2d(width_in, width_out, 4, stride=2, padding=1))
                if index:  # DCGAN: no batch norm on the discriminator's input layer
                    down.append(nn.BatchNorm2d(width_out))
                down.append(nn.LeakyReLU(0.2))
            self.discriminator = nn.Sequential(*down, nn.Flatten(), nn.Linear(math.prod(inner), 1))
            up: list[nn.Module] = [
                nn.Linear(self.latent, math.prod(inner)),
                nn.Unflatten(1, inner),
                nn.BatchNorm2d(inner[0]),
                nn.ReLU(),
            ]
            pairs = list(zip(widths[:0:-1], widths[-2::-1], strict=True))
            for index, (width_in, width_out) in enumerate(pairs):
                up.append(nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1))
                if index < len(pairs) - 1:  # the output layer stays linear
                    up += [nn.BatchNorm2d(width_out), nn.ReLU()]
            self.generator = nn.Sequential(*up)
        else:
            features = math.prod(shape)
            self.discriminator = nn.Sequential(
                nn.Flatten(),
                *_dense([features, *self.hidden], lambda: nn.LeakyReLU(0.2)),
                nn.Linear(self.hidden[-1], 1),
            )
            sizes = [self.latent, *self.hidden[::-1]]
            self.generator = nn.Sequential(
                *_dense(sizes, nn.ReLU), nn.Linear(sizes[-1], features), nn.Unflatten(1, shape)
            )

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.generator(latent)  # (batch, *sample_shape)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._ensure_built(inputs)
        fake = self.generator(self.noise(len(inputs)))
        # Real and generated samples go through the discriminator as separate batches (DCGAN:
        # batch norm statistics of one kind at a time).
        real_logits = self.discriminator(inputs)  # (batch, 1)
        fake_logits = self.discriminator(fake)  # (batch, 1)
        return torch.cat([real_logits, fake_logits], dim=1)  # (batch, 2)


def vae(*, latent: int = 8, hidden: list[int] | tuple[int, ...] = (128, 64)) -> VAE:
    """A dense VAE; sample size from the data.

    Args:
        latent: the latent dimension.
        hidden: encoder layer widths (the decoder mirrors them).

    Example:
        >>> model = vae(latent=4, hidden=[32])
        >>> [t.shape for t in model(torch.zeros(2, 64))]
        [torch.Size([2, 64]), torch.Size([2, 4]), torch.Size([2, 4])]
    """
    _check({"latent": latent, "hidden": hidden})
    return VAE(latent, list(hidden), None)


def conv_vae(*, latent: int = 8, channels: list[int] | tuple[int, ...] = (32, 64)) -> VAE:
    """A convolutional VAE for images whose height and width divide by 2**len(channels).

    Args:
        latent: the latent dimension.
        channels: channels of each stride-2 convolution (the decoder mirrors them).
    """
    _check({"latent": latent, "channels": channels})
    return VAE(latent, [], list(channels))


def gan(*, latent: int = 16, hidden: list[int] | tuple[int, ...] = (128, 128)) -> GAN:
    """A dense GAN: generator latent -> hidden (mirrored) -> sample, discriminator sample ->
    hidden -> 1 logit, LeakyReLU(0.2).

    Args:
        latent: the noise dimension.
        hidden: discriminator layer widths (the generator mirrors them).
    """
    _check({"latent": latent, "hidden": hidden})
    return GAN(latent, list(hidden), None)


def dcgan(*, latent: int = 8, channels: list[int] | tuple[int, ...] = (32, 64)) -> GAN:
    """A DCGAN for images whose height and width divide by 2**len(channels).

    Args:
        latent: the noise dimension.
        channels: channels of each stride-2 discriminator convolution (the generator's
            transposed convolutions mirror them).
    """
    _check({"latent": latent, "channels": channels})
    return GAN(latent, [], list(channels))
