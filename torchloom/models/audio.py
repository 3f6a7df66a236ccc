"""A small CNN over log-mel spectrograms (`audio_cnn`).

    data: {name: speech_digits}      # (batch, frames, n_mels) log-mel features
    model: {name: audio_cnn, channels: [16, 32, 64]}

Audio sources give (batch, frames, n_mels), time first, which the recurrent models (`lstm`,
`gru`, `rnn`) read frame by frame as they are. `audio_cnn` centers each mel band on its mean
over the clip, reads the features as a one-channel image, mel bands by frames, through conv
blocks that halve both; then it pools over time (a word may start anywhere in the clip) but
keeps the frequency axis (where the energy sits is what tells vowels apart), and ends in one
unit per class.
"""

from __future__ import annotations

import torch
from torch import nn

from torchloom.errors import TorchloomError
from torchloom.models.layers import OutputHead

POOLS = ("max", "mean")


class CenterBands(nn.Module):
    """Subtract each mel band's mean over the clip from it: what a voice or a microphone adds to
    every frame (its spectral tilt, a steady hum) goes, what changes within the word stays."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (batch, frames, n_mels)
        return features - features.mean(dim=1, keepdim=True)


class SpectrogramImage(nn.Module):
    """(batch, frames, n_mels) -> (batch, 1, n_mels, frames): a spectrogram as a 1-channel image."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise TorchloomError(
                f"model 'audio_cnn' takes log-mel spectrograms (batch, frames, n_mels), got "
                f"inputs of shape {tuple(features.shape)}. Use an audio source (audio_folder, "
                "speech_digits), or a model for this data."
            )
        return features.transpose(1, 2).unsqueeze(1)


class PoolTime(nn.Module):
    """(batch, channels, bands, frames) -> (batch, channels * bands): max or mean over frames."""

    def __init__(self, pool: str):
        super().__init__()
        self.pool = pool

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.amax(dim=3) if self.pool == "max" else features.mean(dim=3)
        return pooled.flatten(1)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


def audio_cnn(
    *,
    channels: list[int] | tuple[int, ...] = (16, 32, 64),
    dropout: float = 0.2,
    pool: str = "max",
    center: bool = True,
    num_outputs: int | None = None,
) -> nn.Sequential:
    """Conv blocks over a log-mel spectrogram, pooling over time, then a linear head.

    With `center`, each clip's mel bands first lose their mean over the clip (`CenterBands`,
    cepstral mean normalization's log-mel form). A block is conv 3x3 (same padding, no bias) →
    batch norm → ReLU → max-pool 2x2, which halves the mel bands and the frames. After the
    blocks, `pool` over the frames leaves (channels[-1] x bands) features, then dropout and one
    unit per class.

    Args:
        channels: output channels of each block; 40 mel bands become 5 after three blocks.
        dropout: dropout probability before the head (0 turns it off).
        pool: "max" (the strongest response anywhere in the clip) or "mean" over time.
        center: subtract each band's mean over the clip before the convolutions.
        num_outputs: output units; set from the data when None.

    Example:
        >>> audio_cnn(num_outputs=10)(torch.zeros(2, 101, 40)).shape
        torch.Size([2, 10])
    """
    options = {"channels": channels, "dropout": dropout, "pool": pool, "center": center}
    problems = audio_cnn_problems(options)
    if problems:
        raise TorchloomError(" ".join(problems))
    layers: list[nn.Module] = [CenterBands()] if center else []
    layers.append(SpectrogramImage())  # (b, 1, n_mels, frames)
    for width in channels:
        layers += [
            nn.LazyConv2d(width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),  # halves bands and frames
        ]
    layers.append(PoolTime(pool))  # (b, channels[-1] * bands)
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.LazyLinear(num_outputs) if num_outputs else OutputHead())
    return nn.Sequential(*layers)


def audio_cnn_problems(options: dict) -> list[str]:
    """Bad option values of an audio_cnn, one line each, before anything is built."""
    problems = []
    channels = options.get("channels", [16])
    if (
        not isinstance(channels, list | tuple)
        or not channels
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        problems.append(
            f"model.channels: expected a list of positive channel counts, e.g. [16, 32, 64], "
            f"got {channels!r}."
        )
    dropout = options.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        problems.append(f"model.dropout: expected a probability in [0, 1), got {dropout!r}.")
    if options.get("pool", "max") not in POOLS:
        problems.append(f"model.pool: expected 'max' or 'mean', got {options['pool']!r}.")
    if not isinstance(options.get("center", True), bool):
        problems.append(f"model.center: expected true or false, got {options['center']!r}.")
    return problems


class LogMelInput(nn.Module):
    """Raw clips in, the model's answer out: the log-mel front end every audio run wraps its
    model in, on the model's device.

    (batch, samples) waveforms -> `LogMel.compute` (torch.stft and librosa's filterbank) ->
    the per-band standardization fitted on the training clips -> in training, SpecAugment's
    time and frequency masks (`data.augment`) -> `body`, the run's model, which sees
    (batch, frames, n_mels). Every parameter comes from `preprocess.json`; the window, the
    filterbank and the scaler are buffers left out of the state dict (rebuilt from it), so
    model.safetensors holds the body's weights under `body.` and `masked_batches`, the
    count of masked batches that seeds the next one's masks (a resumed run draws the masks the
    uninterrupted one drew).

    Attributes:
        body: the model the spectrograms go to.
        features: the run's `torchloom.data.audio.LogMel`.
    """

    def __init__(self, body: nn.Module, preprocess, augment=None):
        super().__init__()
        features = preprocess.audio
        assert features is not None, "LogMelInput needs an audio run's preprocessing"
        self.body, self.features = body, features
        self.window: torch.Tensor
        window = torch.hann_window(features.n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        filterbank = torch.from_numpy(features.filterbank())
        self.register_buffer("filterbank", filterbank, persistent=False)
        self.scaled = preprocess.mean is not None
        if self.scaled:
            shape = (1, 1, -1) if preprocess.per == "frequency" else (1, *features.shape)
            mean = torch.tensor(preprocess.mean, dtype=torch.float32).reshape(shape)
            std = torch.tensor(preprocess.std, dtype=torch.float32).reshape(shape)
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)
        self.augment = augment if augment is not None and augment.masking else None
        self.masked_batches: torch.Tensor
        self.register_buffer("masked_batches", torch.zeros((), dtype=torch.int64))
        # The count as a Python int, read from the buffer once after each load: reading the
        # buffer every step would wait for the device.
        self.masked: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "masked", None))

    def spectrograms(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, n_mels), standardized, never masked."""
        samples = self.features.samples
        if waveforms.dim() != 2 or waveforms.shape[1] != samples:
            raise TorchloomError(
                f"this audio run hears clips of {samples} samples ({self.features.seconds:g} s "
                f"at {self.features.sample_rate} Hz) as (batch, samples) waveforms, got inputs "
                f"of shape {tuple(waveforms.shape)}. Give audio files, or waveforms of that "
                "length at that rate."
            )
        # float32 whatever the autocast: power spectra reach 1e5, past float16's range
        with torch.autocast(waveforms.device.type, enabled=False):
            features = self.features.compute(waveforms.float(), self.window, self.filterbank)
            if self.scaled:
                features = (features - self.mean) / self.std
        return features

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        features = self.spectrograms(waveforms)
        if self.training and self.augment is not None:
            # Seeded by (run seed, batches masked so far), the count kept with the weights.
            if self.masked is None:
                self.masked = int(self.masked_batches)
            features = self.augment(features, epoch=0, batch_index=self.masked)
            self.masked += 1
            self.masked_batches.add_(1)
        return self.body(features)
