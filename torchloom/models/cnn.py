"""Convolutional networks for images (batch, channels, height, width): LeNet, a configurable
small convnet, and a small ResNet. Input channels and the first linear layer's size are inferred
from the data (lazy layers); the output layer is sized from the classes."""

from __future__ import annotations

from torch import nn

from torchloom.errors import TorchloomError
from torchloom.models.layers import ACTIVATIONS, OutputHead


def lenet(*, activation: str = "relu", num_outputs: int | None = None) -> nn.Sequential:
    """The classic tutorial's CIFAR-10 LeNet: conv 6@5x5, max-pool 2, conv 16@5x5, max-pool 2,
    fully connected 120, 84, then one unit per class.

    Args:
        activation: after each conv and hidden linear layer ("relu" as in the tutorial; "tanh"
            as in LeCun's original).
        num_outputs: output units; set from the data when None.

    Returns:
        An `nn.Sequential`. On 3x32x32 inputs with 10 classes it has the tutorial's 62,006
        parameters; on 1x28x28 (Fashion-MNIST) the first linear layer takes 16x4x4 = 256.

    Example:
        >>> model = lenet(num_outputs=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    problems = convnet_problems({"activation": activation})
    if problems:
        raise TorchloomError(" ".join(problems))
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.LazyConv2d(6, kernel_size=5),  # (b, c, h, w) -> (b, 6, h-4, w-4)
        act(),
        nn.MaxPool2d(2),  # -> (b, 6, (h-4)/2, (w-4)/2)
        nn.Conv2d(6, 16, kernel_size=5),  # -> (b, 16, (h-4)/2-4, ...)
        act(),
        nn.MaxPool2d(2),  # 32x32 input: (b, 16, 5, 5); 28x28: (b, 16, 4, 4)
        nn.Flatten(),
        nn.LazyLinear(120),
        act(),
        nn.Linear(120, 84),
        act(),
        nn.Linear(84, num_outputs) if num_outputs else OutputHead(),
    )


def convnet(
    *,
    channels: list[int] | tuple[int, ...] = (32, 64),
    kernel_size: int = 3,
    convs_per_block: int = 1,
    batch_norm: bool = True,
    dropout: float = 0.25,
    hidden: list[int] | tuple[int, ...] = (128,),
    pool: str = "max",
    activation: str = "relu",
    num_outputs: int | None = None,
) -> nn.Sequential:
    """A small VGG-style network: one block per entry of `channels`, then a linear head.

    A block is `convs_per_block` times [conv (same padding) → batch norm → activation], then a
    2x2 pool that halves height and width, then dropout. The head flattens, adds the `hidden`
    linear layers (activation, dropout), and ends in one unit per class.

    Args:
        channels: output channels of each block; e.g. [32, 64] takes 8x8 digits to 64x2x2.
        kernel_size: odd conv kernel size (padding keeps height and width).
        convs_per_block: convolutions before each pool.
        batch_norm: batch normalization after each conv (the conv then has no bias).
        dropout: dropout probability after each block and hidden layer (0 turns it off).
        hidden: units of the head's hidden linear layers ([] for none).
        pool: "max" or "avg".
        activation: a name from `ACTIVATIONS`.
        num_outputs: output units; set from the data when None.

    Example:
        >>> convnet(channels=[32, 64], num_outputs=10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    problems = convnet_problems(
        {"channels": channels, "kernel_size": kernel_size, "convs_per_block": convs_per_block,
         "dropout": dropout, "hidden": hidden, "pool": pool, "activation": activation}
    )  # fmt: skip
    if problems:
        raise TorchloomError(" ".join(problems))
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for width in channels:
        for _ in range(convs_per_block):
            layers.append(
                nn.LazyConv2d(width, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(act())
        layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))  # halves h and w
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Flatten())
    for units in hidden:
        layers += [nn.LazyLinear(units), act()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.LazyLinear(num_outputs) if num_outputs else OutputHead())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """He et al.'s basic block: conv3x3 → BN → ReLU → conv3x3 → BN, plus the input, then ReLU.

    With `stride` 2 or a change of channels the shortcut is a 1x1 conv + BN (projection).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs):  # (b, in_channels, h, w) -> (b, out_channels, h/stride, w/stride)
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(inputs)))))
        return self.relu(residual + self.shortcut(inputs))


def resnet(*, depth: int = 14, width: int = 16, num_outputs: int | None = None) -> nn.Sequential:
    """The CIFAR ResNet of He et al. (2016): a 3x3 stem, three stages of (depth - 2) / 6 basic
    blocks with width, 2x width and 4x width channels (the 2nd and 3rd halve height and width),
    global average pooling, and one unit per class.

    Args:
        depth: layers with weights, 6n + 2: 8, 14, 20 (ResNet-20), 32, 44, 56, 110.
        width: channels of the first stage.
        num_outputs: output units; set from the data when None.

    Example:
        >>> resnet(depth=8, width=8, num_outputs=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    problems = resnet_problems({"depth": depth, "width": width})
    if problems:
        raise TorchloomError(" ".join(problems))
    blocks_per_stage = (depth - 2) // 6
    layers: list[nn.Module] = [
        nn.LazyConv2d(width, 3, padding=1, bias=False),  # (b, c, h, w) -> (b, width, h, w)
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    channels = width
    for stage in range(3):
        out_channels = width * 2**stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(ResidualBlock(channels, out_channels, stride))
            channels = out_channels
    layers += [
        nn.AdaptiveAvgPool2d(1),  # (b, 4 * width, h/4, w/4) -> (b, 4 * width, 1, 1)
        nn.Flatten(),
        nn.Linear(channels, num_outputs) if num_outputs else OutputHead(),
    ]
    return nn.Sequential(*layers)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def convnet_problems(options: dict) -> list[str]:
    """Problems with convnet option values, one line each, before anything is built."""
    problems = []

    def expect(key: str, default, valid: bool, wanted: str) -> None:
        if not valid:
            problems.append(f"model.{key}: expected {wanted}, got {options.get(key, default)!r}.")

    channels = options.get("channels", [32])
    is_list = isinstance(channels, list | tuple)
    valid = is_list and bool(channels) and all(map(_is_positive_int, channels))
    expect("channels", None, valid, "a list of positive channel counts, e.g. [32, 64]")
    kernel_size = options.get("kernel_size", 3)
    valid = _is_positive_int(kernel_size) and kernel_size % 2 == 1
    expect("kernel_size", 3, valid, "an odd positive size (3, 5, ...)")
    valid = _is_positive_int(options.get("convs_per_block", 1))
    expect("convs_per_block", 1, valid, "a positive whole number")
    dropout = options.get("dropout", 0.0)
    valid = isinstance(dropout, int | float) and not isinstance(dropout, bool) and 0 <= dropout < 1
    expect("dropout", 0.0, valid, "a probability in [0, 1)")
    hidden = options.get("hidden", [])
    valid = isinstance(hidden, list | tuple) and all(map(_is_positive_int, hidden))
    expect("hidden", [], valid, "a list of positive unit counts, e.g. [128]")
    expect("pool", "max", options.get("pool", "max") in ("max", "avg"), "'max' or 'avg'")
    valid = options.get("activation", "relu") in ACTIVATIONS
    expect("activation", "relu", valid, f"one of {', '.join(ACTIVATIONS)}")
    return problems


def resnet_problems(options: dict) -> list[str]:
    """Problems with resnet option values, one line each, before anything is built."""
    problems = []
    depth = options.get("depth", 14)
    if not _is_positive_int(depth) or depth < 8 or (depth - 2) % 6:
        problems.append(
            f"model.depth: expected 6n + 2 layers (8, 14, 20, 32, 44, 56, 110), got {depth!r}."
        )
    if not _is_positive_int(options.get("width", 16)):
        problems.append(
            f"model.width: expected a positive channel count, got {options['width']!r}."
        )
    return problems
