"""What the generative tasks (`vae`, `gan`) share: image grids as PNG, samples back in the
data's units, and the callback that writes sample grids into a run's `plots/`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchloom.train.callbacks import Callback, TrainState

GRID_SEED = 1234  # grids draw from their own generator: the run's RNG stream stays untouched


def as_images(samples: torch.Tensor) -> torch.Tensor | None:
    """Samples as (count, channels, height, width): images stay, flat square samples (64 ->
    1x8x8, 784 -> 1x28x28) are reshaped; None when there is no image shape to show."""
    if samples.dim() == 4:
        return samples
    if samples.dim() == 3:  # (count, height, width)
        return samples[:, None]
    width = samples[0].numel()
    side = math.isqrt(width)
    if side * side != width:
        return None
    return samples.reshape(len(samples), 1, side, side)


def tile(images: torch.Tensor, columns: int = 10, padding: int = 1) -> np.ndarray:
    """Tile (count, channels, height, width) images into one (rows*(h+p)-p, ...) array in [0, 1].

    The whole grid is scaled by its own minimum and maximum, so the samples stay comparable.
    Returns (H, W) for one channel, (H, W, 3) for three.
    """
    images = images.detach().float().cpu()
    if images.shape[-1] < 32:  # tiny images (8x8 digits): 4x larger, nearest pixel
        images = images.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    count, channels, height, width = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    low, high = images.min(), images.max()
    images = (images - low) / (high - low).clamp_min(1e-8)
    grid = torch.ones(
        channels, rows * (height + padding) - padding, columns * (width + padding) - padding
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    array = grid.permute(1, 2, 0).numpy()  # (H, W, channels)
    return array[:, :, 0] if channels == 1 else array


def save_grid(samples: torch.Tensor, path: Path, columns: int = 10) -> Path | None:
    """Write samples as one PNG grid (grey for one channel); None when they are not images."""
    images = as_images(samples)
    if images is None or images.shape[1] not in (1, 3):
        return None
    from matplotlib.image import imsave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = tile(images, columns)
    imsave(path, array, cmap="gray" if array.ndim == 2 else None, vmin=0.0, vmax=1.0)
    return path


def unscale(samples: np.ndarray, preprocess) -> np.ndarray:
    """Samples in the data's own units (undo the standardization fitted on train)."""
    if preprocess is None or preprocess.mean is None:
        return samples
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    std = np.asarray(preprocess.std, dtype=np.float32)
    if preprocess.per == "channel" and samples.ndim > 2:
        shape = (1, -1) + (1,) * (samples.ndim - 2)
        return samples * std.reshape(shape) + mean.reshape(shape)
    flat = samples.reshape(len(samples), -1)
    return (flat * std + mean).reshape(samples.shape)


def grid_generator(seed: int = GRID_SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class SampleGrids(Callback):
    """Writes `plots/samples-epoch-NNN.png` after each epoch (`every_epoch`) or
    `plots/samples.png` at the end, from the same fixed noise each time, and for a VAE
    `plots/reconstructions.png`: real validation inputs (odd rows) over their reconstructions
    (even rows)."""

    def __init__(
        self,
        run_dir: Path,
        every_epoch: bool,
        inputs: torch.Tensor | None = None,
        preprocess=None,
    ):
        self.plots = Path(run_dir) / "plots"
        self.every_epoch = every_epoch
        self.inputs = inputs  # (count, ...) real samples to reconstruct, or None
        self.preprocess = preprocess  # to draw pixels, not standardized values

    def _pixels(self, samples: torch.Tensor) -> torch.Tensor:
        """Samples in the data's own units: per-pixel standardization drawn as is would show
        each pixel's scale (stripes), not the image."""
        array = unscale(samples.detach().float().cpu().numpy(), self.preprocess)
        return torch.from_numpy(np.ascontiguousarray(array))

    def on_epoch_end(self, state: TrainState) -> None:
        if self.every_epoch:
            model: Any = state.model  # a VAE or GAN zoo model: it has `sample`
            samples = self._pixels(model.sample(100, grid_generator()))
            save_grid(samples, self.plots / f"samples-epoch-{state.epoch + 1:03d}.png")

    def on_fit_end(self, state: TrainState) -> None:
        if state.interrupted:  # interrupted: the grids come when the resumed run ends
            return
        model: Any = state.model  # a VAE or GAN zoo model: it has `sample`
        save_grid(self._pixels(model.sample(100, grid_generator())), self.plots / "samples.png")
        if self.inputs is not None and len(self.inputs):
            was_training = model.training
            model.eval()
            with torch.no_grad():
                reconstruction = model(self.inputs)[0]
            model.train(was_training)
            # Rows of 10: real, its reconstruction, real, reconstruction, ...
            pairs = torch.stack([self.inputs, reconstruction.reshape(self.inputs.shape)], dim=0)
            count = len(self.inputs) - len(self.inputs) % 10
            rows = pairs[:, :count].reshape(2, -1, 10, *self.inputs.shape[1:])
            interleaved = rows.transpose(0, 1).reshape(-1, *self.inputs.shape[1:])
            save_grid(self._pixels(interleaved), self.plots / "reconstructions.png")
