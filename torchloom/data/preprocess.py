"""Preprocessing fitted on the training split only, and saved as JSON for prediction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from torchloom.data.missing import ColumnPrep
from torchloom.errors import DataError

if TYPE_CHECKING:
    from torchloom.data.audio import LogMel
    from torchloom.data.embeddings import SentenceEncoder
    from torchloom.data.text import Tokenizer


@dataclass
class Preprocess:
    """What prediction needs to treat new inputs as training did.

    Attributes:
        feature_names: the input columns, in order.
        classes: class names in output-index order (classification), else None.
        task: "classification" or "regression".
        mean, std: standardization fitted on the training split, one value per feature or per
            channel (see `per`); None when off.
        per: "feature" (tables), "channel" (images: one mean and std per color channel, over
            every pixel of the training images) or "frequency" (audio: one per mel band, over
            every frame of the training clips).
        tokenizer: for text, the vocabulary fitted on the training split (see
            `torchloom.data.text`); `transform` then turns raw strings into token ids. None for
            numbers.
        columns: the fitted missing-value fills and category encodings that turn raw table rows
            (text, blanks) into the model's features, applied before scaling; None when the
            table needed none. `feature_names` then names the encoded features and
            `input_columns` the raw columns prediction reads.
        audio: for audio, the log-mel spectrogram (`torchloom.data.audio.LogMel`) that turns
            (num_samples, samples) waveforms into (num_samples, frames, n_mels) features
            before scaling; None otherwise. Both are applied on the model's device by
            `torchloom.models.audio.LogMelInput`, which every audio run's model sits behind:
            `transform` leaves waveforms as they are.
    """

    feature_names: list[str]
    classes: list[str] | None
    task: str
    mean: list[float] | None = None
    std: list[float] | None = None
    extra: dict = field(default_factory=dict)
    per: str = "feature"
    tokenizer: Tokenizer | SentenceEncoder | None = None
    columns: ColumnPrep | None = None
    audio: LogMel | None = None

    @property
    def vocab_size(self) -> int | None:
        """Entries in the text vocabulary (`<pad>` and `<unk>` included); None for numbers."""
        vocabulary = getattr(self.tokenizer, "vocabulary", None)  # none with a sentence encoder
        return None if vocabulary is None else len(vocabulary)

    def fit_tokenizer(self, train_texts: np.ndarray, options: dict) -> Preprocess:
        """Build the text vocabulary from the training texts only (options: min_freq, max_size,
        max_len; see `torchloom.data.text.Tokenizer.fit`). Text is never standardized."""
        options = dict(options)
        encoder = options.pop("encoder", None)
        if encoder is not None:  # a frozen pretrained encoder: nothing is fitted
            from torchloom.data.embeddings import SentenceEncoder

            self.tokenizer = SentenceEncoder(encoder)
        else:
            from torchloom.data.text import Tokenizer

            self.tokenizer = Tokenizer.fit(train_texts, **options)
        self.mean = self.std = None
        return self

    def fit_audio(
        self, train_waveforms: np.ndarray, options: dict, standardize: bool | str
    ) -> Preprocess:
        """Set the log-mel features (`options`: `LogMel`'s fields) and fit their scaler on the
        training clips: one mean and std per mel band (True), per (frame, band) value
        ("per_feature"), or none (False)."""
        from torchloom.data.audio import LogMel

        self.audio = LogMel.from_json(options)
        if standardize is False:
            return self
        if standardize not in (True, "per_feature"):
            raise DataError(
                f"data.standardize: audio features are standardized per mel band (true), per "
                f"value (per_feature) or not at all (false), got {standardize!r}."
            )
        features = self.audio.encode(train_waveforms)  # (clips, frames, n_mels)
        self.per = "frequency" if standardize is True else "feature"
        width = features.shape[-1] if self.per == "frequency" else features[0].size
        mean, std = _feature_statistics(features.reshape(-1, width))
        std[std < 1e-12] = 1.0  # a band that never changes (below fmin) keeps its scale
        self.mean, self.std = mean.tolist(), std.tolist()
        return self

    @property
    def input_columns(self) -> list[str]:
        """The raw columns prediction reads (before any encoding)."""
        return self.feature_names if self.columns is None else self.columns.names

    def fit(self, train_features: np.ndarray, standardize: bool | str) -> Preprocess:
        """Fit the scaler on the training features only.

        Args:
            train_features: (num_samples, num_features) or images (num_samples, channels,
                height, width).
            standardize: True (per channel for images, per feature otherwise), "per_feature",
                "per_channel", or False (no scaling).
        """
        if train_features.ndim >= 3 and train_features.size:
            # Images: the pixel values' range, so a served model can read a PNG (0..255) in
            # the data's own units (digits run 0..16).
            low, high = float(train_features.min()), float(train_features.max())
            self.extra["pixel_range"] = [low, high]
        if standardize is True:
            self.per = "channel" if train_features.ndim == 4 else "feature"
        elif standardize in ("per_feature", "per_channel"):
            self.per = standardize.removeprefix("per_")
        elif standardize is not False:
            raise DataError(
                f"data.standardize: expected true, false, per_feature or per_channel, got "
                f"{standardize!r}."
            )
        if standardize is not False and self.per == "channel":
            if train_features.ndim < 3:
                raise DataError(
                    f"data.standardize: per_channel needs images (num_samples, channels, height, "
                    f"width); these samples have shape {train_features.shape[1:]}. Use "
                    "per_feature or true."
                )
            self.mean, self.std = _channel_statistics(train_features)
        elif standardize is not False:
            mean, std = _feature_statistics(train_features.reshape(len(train_features), -1))
            # A constant feature (a border pixel that is always 0) keeps its scale.
            std[std < 1e-12] = 1.0
            self.mean = mean.tolist()
            self.std = std.tolist()
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Apply the fitted fills and encodings (tables with `columns`), then the scaling;
        returns float32 of the same shape ((num_samples, len(feature_names)) for `columns`).
        For text: raw strings (num_samples,) in, (num_samples, max_len) int64 token ids out.
        For audio: waveforms as float32, unchanged (the model's front end does the rest)."""
        if self.tokenizer is not None:
            return self.tokenizer.encode(features)
        if self.audio is not None:  # waveforms: the model's front end makes the features
            return np.asarray(features, dtype=np.float32)
        if self.columns is not None:
            features = self.columns.transform(features)
        features = np.asarray(features)
        if features.dtype == object:
            features = features.astype(np.float32)
        if self.mean is None:
            # A float32 array comes back as is: the caller copies it if it must not be shared.
            return np.asarray(features, dtype=np.float32)
        shape = features.shape
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if self.per == "channel":
            # (channels,) -> (1, channels, 1, 1): broadcast over samples and pixels.
            trailing = (1,) * (features.ndim - 2)
            mean, std = mean.reshape(1, -1, *trailing), std.reshape(1, -1, *trailing)
        elif self.per == "frequency":  # (n_mels,): broadcast over clips and frames
            mean, std = mean.reshape(1, 1, -1), std.reshape(1, 1, -1)
        else:
            mean, std = mean.reshape(-1), std.reshape(-1)
            # Not -1: with no rows there is nothing to infer it from.
            features = features.reshape(len(features), int(np.prod(shape[1:])))
        # One new float32 array, scaled in place: the caller's array is never changed, and no
        # temporary of the data's size is made on the way.
        scaled = np.subtract(features, mean, dtype=np.float32)
        scaled /= std
        return scaled.reshape(shape)

    def to_json(self) -> dict:
        text = {} if self.tokenizer is None else {"text": self.tokenizer.to_json()}
        missing = {} if self.columns is None else {"missing": self.columns.to_json()}
        audio = {} if self.audio is None else {"audio": self.audio.to_json()}
        return {
            "format": 1,
            "task": self.task,
            "feature_names": self.feature_names,
            "classes": self.classes,
            "standardize": None
            if self.mean is None
            else {"mean": self.mean, "std": self.std, "per": self.per},
            "extra": self.extra,
            **text,
            **missing,
            **audio,
        }

    @classmethod
    def from_json(cls, payload: dict) -> Preprocess:
        scale = payload.get("standardize") or {}
        tokenizer: Tokenizer | SentenceEncoder | None = None
        if payload.get("text") is not None and "encoder" in payload["text"]:
            from torchloom.data.embeddings import SentenceEncoder

            tokenizer = SentenceEncoder(payload["text"]["encoder"])
        elif payload.get("text") is not None:
            from torchloom.data.text import Tokenizer

            tokenizer = Tokenizer.from_json(payload["text"])
        audio = None
        if payload.get("audio") is not None:
            from torchloom.data.audio import LogMel

            audio = LogMel.from_json(payload["audio"])
        return cls(
            feature_names=list(payload["feature_names"]),
            classes=payload.get("classes"),
            task=payload["task"],
            mean=scale.get("mean"),
            std=scale.get("std"),
            extra=payload.get("extra", {}),
            per=scale.get("per", "feature"),
            tokenizer=tokenizer,
            columns=ColumnPrep.from_json(payload["missing"]) if payload.get("missing") else None,
            audio=audio,
        )


def _feature_statistics(rows: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of (n, features) rows, in float64.

    Two passes over chunks of rows (the mean, then the squared deviations from it), so a large
    training set never needs a float64 copy or a deviation array of its own size.
    """
    total = np.zeros(rows.shape[1])
    for start in range(0, len(rows), chunk):
        total += rows[start : start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / len(rows)
    squares = np.zeros(rows.shape[1])
    for start in range(0, len(rows), chunk):
        deviations = rows[start : start + chunk].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", deviations, deviations)
    return mean, np.sqrt(squares / len(rows))


def _channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel of (n, channels, ...) images, in float64.

    Summed over chunks of samples so a 60,000-image training set never needs a float64 copy.
    """
    channels = images.shape[1]
    count = images.size // channels
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64)
        block = block.reshape(len(block), channels, -1)  # (chunk, channels, pixels)
        total += block.sum(axis=(0, 2))
        squares += np.square(block).sum(axis=(0, 2))
    return scale_from_sums(total, squares, count)


def scale_from_sums(
    total: np.ndarray, squares: np.ndarray, count: int
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation from float64 sums of values and of their squares over
    `count` values each (one entry per channel, or per feature); a constant one keeps its scale.

    Shared by the in-memory fit and the streamed one (`torchloom.data.image_stream`), so both
    give the same numbers: sums of whole pixel values are exact in float64, in any order.
    """
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std < 1e-12] = 1.0  # a constant channel keeps its scale
    return mean.tolist(), std.tolist()


def arrange_inputs(array: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Inputs for prediction in the (num_samples, *sample_shape) layout training used.

    Accepts the layout itself, one sample without the batch axis, flat rows (a CSV of pixels),
    grayscale images without the channel axis (n, height, width), and channels-last images
    (n, height, width, channels) as image files and most libraries hold them.

    Raises:
        DataError: a shape that is none of these.
    """
    sample_shape = tuple(sample_shape)
    shape = tuple(array.shape)
    size = int(np.prod(sample_shape))
    if shape == sample_shape:
        return array[None]  # one sample
    if shape[1:] == sample_shape:
        return array
    if array.ndim == 2 and shape[1] == size:
        return array.reshape(len(array), *sample_shape)  # flat rows
    if len(sample_shape) == 3:
        channels, height, width = sample_shape
        if channels == 1 and shape[1:] == (height, width):
            return array[:, None]
        if shape[1:] == (height, width, channels):
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    raise DataError(
        f"inputs have shape {shape[1:]} per sample; the model was trained on {sample_shape}"
        + (" (channels, height, width)" if len(sample_shape) == 3 else "")
        + ". Give an array of shape (num_samples, "
        + ", ".join(map(str, sample_shape))
        + ")."
    )
