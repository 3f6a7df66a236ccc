"""Autoencoders for anomaly detection: rebuild the input through a narrow bottleneck.

Both return (batch, num_features) reconstructions, flat, so the anomaly task compares them with
the flattened input whatever its shape.
"""

from __future__ import annotations

import torch
from torch import nn

from torchloom.errors import TorchloomError
from torchloom.models.layers import ACTIVATIONS, OutputHead, input_linear


def autoencoder(
    *,
    hidden: list[int] | tuple[int, ...] = (32,),
    bottleneck: int = 4,
    activation: str = "relu",
    in_features: int | None = None,
    num_outputs: int | None = None,
) -> nn.Sequential:
    """A dense autoencoder: in → hidden... → bottleneck → reversed hidden... → in.

    Args:
        hidden: units of the encoder's hidden layers (the decoder mirrors them).
        bottleneck: units of the code layer; fewer than the features, or it learns the identity.
        activation: one of `ACTIVATIONS`, after every layer but the code and the output.
        in_features: input size; inferred from the data when None.
        num_outputs: reconstruction size, the number of input features; set from the data.

    Returns:
        An `nn.Sequential` that flattens its input and returns (batch, num_features).

    Example:
        >>> autoencoder(hidden=[16], bottleneck=2, in_features=9, num_outputs=9)(
        ...     torch.zeros(5, 9)).shape
        torch.Size([5, 9])
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for units in hidden:  # encoder
        layers += [input_linear(width, units), ACTIVATIONS[activation]()]
        width = units
    layers.append(input_linear(width, bottleneck))  # the code: linear, no activation
    width = bottleneck
    for units in reversed(hidden):  # decoder
        layers += [nn.Linear(width, units), ACTIVATIONS[activation]()]
        width = units
    layers.append(nn.Linear(width, num_outputs) if num_outputs else OutputHead())
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """Two conv + 2x2 max-pool blocks down, two upsample + conv blocks back up.

    Input (batch, image_channels, height, width) with height and width divisible by 4; output the
    reconstruction flattened to (batch, image_channels * height * width).
    """

    def __init__(self, channels: tuple[int, int], image_channels: int, activation: str):
        super().__init__()
        first, second = channels
        act = ACTIVATIONS[activation]
        self.image_channels = image_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(image_channels, first, 3, padding=1),  # (batch, first, h, w)
            act(),
            nn.MaxPool2d(2),  # (batch, first, h/2, w/2)
            nn.Conv2d(first, second, 3, padding=1),
            act(),
            nn.MaxPool2d(2),  # (batch, second, h/4, w/4): the code
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),  # (batch, second, h/2, w/2)
            nn.Conv2d(second, first, 3, padding=1),
            act(),
            nn.Upsample(scale_factor=2, mode="nearest"),  # (batch, first, h, w)
            nn.Conv2d(first, image_channels, 3, padding=1),  # linear output: scaled pixels
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.image_channels:
            raise TorchloomError(
                f"conv_autoencoder: expected images (batch, {self.image_channels}, height, width), "
                f"got {tuple(images.shape)}. Load image-shaped data (e.g. data.shape: image) or "
                "set model.image_channels."
            )
        if images.shape[2] % 4 or images.shape[3] % 4:
            raise TorchloomError(
                f"conv_autoencoder: height and width must be divisible by 4, got "
                f"{tuple(images.shape[2:])}. Pad or crop the images."
            )
        return self.decoder(self.encoder(images)).flatten(1)  # (batch, c * h * w)


def conv_autoencoder(
    *,
    channels: list[int] | tuple[int, int] = (16, 8),
    image_channels: int = 1,
    activation: str = "relu",
    num_outputs: int | None = None,
) -> ConvAutoencoder:
    """A small convolutional autoencoder for images (e.g. digits as 1x8x8).

    Args:
        channels: feature maps of the two encoder blocks; the code is channels[1] maps of
            (height/4, width/4).
        image_channels: channels of the input images (1 grayscale, 3 color).
        activation: one of `ACTIVATIONS`.
        num_outputs: the reconstruction size, set from the data; checked against the output.

    Example:
        >>> conv_autoencoder()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 64])
    """
    first, second = channels
    return ConvAutoencoder((first, second), image_channels, activation)


def autoencoder_problems(options: dict) -> list[str]:
    """Option values the autoencoders cannot use, checked before anything is built."""
    problems = []
    activation = options.get("activation", "relu")
    if activation not in ACTIVATIONS:
        problems.append(
            f"model.activation: unknown activation '{activation}'. Known: {', '.join(ACTIVATIONS)}."
        )
    channels = options.get("channels")
    if channels is not None and (
        not isinstance(channels, list | tuple)
        or len(channels) != 2
        or not all(isinstance(c, int) and c > 0 for c in channels)
    ):
        problems.append(f"model.channels: expected two positive integers, got {channels!r}.")
    bottleneck = options.get("bottleneck", 1)
    if not isinstance(bottleneck, int) or bottleneck < 1:
        problems.append(f"model.bottleneck: expected a positive integer, got {bottleneck!r}.")
    return problems
