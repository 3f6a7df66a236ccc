"""Audio: clips read from files (soundfile), and the log-mel spectrogram models learn from.

    data: {name: audio_folder, path: clips, sample_rate: 16000, seconds: 1.0, mel: {n_mels: 40}}

A clip is read whole, mixed down to mono, resampled to one rate (libsoxr, as librosa does) and
padded with silence or cut at its end to a set length, so a source is one (num_clips, samples)
float32 array of waveforms. The features are computed from them by `LogMel`, a preprocessing
step like the text vocabulary: `torch.stft` and librosa's mel filterbank, in decibels, with every
parameter saved in `preprocess.json`, so `torchloom predict RUN_DIR clip.wav` reads a raw file
and hears it as training did. The per-frequency standardization on top is fitted on the
training clips (`torchloom.data.preprocess`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from torchloom.data.class_folders import class_folder_files
from torchloom.data.tabular import Table
from torchloom.errors import DataError, did_you_mean

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
INSTALL = "pip install soundfile soxr librosa (or pip install 'torchloom[audio]')"


@dataclass(frozen=True)
class LogMel:
    """Fixed-length clips -> log-mel spectrograms (num_clips, frames, n_mels), in dB.

    The same numbers as `librosa.power_to_db(librosa.feature.melspectrogram(y=clip, sr=...,
    n_fft=..., hop_length=..., n_mels=..., fmin=..., fmax=...))` with librosa's defaults (a
    periodic Hann window of n_fft samples, centered frames padded with zeros, power 2, Slaney
    mel filters, dB floored 80 below the clip's loudest value), computed by `torch.stft` on a
    batch of clips at once; `tests/test_audio.py` checks the two agree.

    Attributes:
        sample_rate: samples per second every clip is resampled to.
        seconds: every clip's length; shorter ones are padded with silence at the end, longer
            ones cut there.
        n_mels: mel bands (the spectrogram's height).
        n_fft: samples per analysis window (400: 25 ms at 16 kHz).
        hop_length: samples between frames (160: 10 ms at 16 kHz).
        fmin, fmax: the mel filters' frequency range in Hz; fmax None is half the rate.
        top_db: the floor, in dB below each clip's loudest value (silence stays finite).
    """

    sample_rate: int = 16000
    seconds: float = 1.0
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    fmin: float = 20.0
    fmax: float | None = None
    top_db: float = 80.0

    @classmethod
    def from_options(cls, sample_rate, seconds, mel: dict | None) -> LogMel:
        """From a source's options (`mel` holds n_mels, n_fft, ...), checked.

        Raises:
            DataError: an unknown `mel` key or a value out of range, every one named at once.
        """
        mel = {} if mel is None else mel
        if not isinstance(mel, dict):
            raise DataError(
                f"data.mel: expected a mapping such as {{n_mels: 40, hop_length: 160}}, got "
                f"{mel!r}."
            )
        known = [
            name for name in cls.__dataclass_fields__ if name not in ("sample_rate", "seconds")
        ]
        problems = [
            f"data.mel.{key}: unknown key.{did_you_mean(str(key), known)} Known: "
            f"{', '.join(known)}."
            for key in mel
            if key not in known
        ]
        if problems:
            raise DataError(" ".join(problems))
        features = cls(sample_rate=sample_rate, seconds=seconds, **mel)
        features.check()
        return features

    def check(self) -> None:
        """Raise one `DataError` naming every parameter out of range."""
        problems = []

        def whole(name: str, value, low: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"data.{name}: expected a whole number >= {low}, got {value!r}.")

        whole("sample_rate", self.sample_rate, 1000)
        for name in ("n_mels", "n_fft", "hop_length"):
            whole(f"mel.{name}", getattr(self, name))
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            problems.append(f"data.seconds: expected a clip length > 0 seconds, got {seconds!r}.")
        for name in ("fmin", "fmax", "top_db"):
            value = getattr(self, name)
            if value is None and name == "fmax":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"data.mel.{name}: expected a number >= 0, got {value!r}.")
        if not problems:
            nyquist = self.sample_rate / 2
            if not self.fmin < (self.fmax or nyquist) <= nyquist:
                problems.append(
                    f"data.mel: expected fmin < fmax <= {nyquist:g} (half of sample_rate "
                    f"{self.sample_rate}), got fmin {self.fmin} and fmax {self.fmax}."
                )
            if self.n_fft > self.samples:
                problems.append(
                    f"data.mel.n_fft: a window of {self.n_fft} samples is longer than a clip "
                    f"({self.samples} samples). Lower it, or raise data.seconds."
                )
        if problems:
            raise DataError(" ".join(problems))

    @property
    def samples(self) -> int:
        """Samples in one clip."""
        return int(round(self.sample_rate * self.seconds))

    @property
    def frames(self) -> int:
        """Frames in one spectrogram (centered frames: one every hop, from sample 0)."""
        return 1 + self.samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """One clip's features: (frames, n_mels), time first, as the recurrent models read."""
        return self.frames, self.n_mels

    def feature_names(self) -> list[str]:
        return [f"frame_{t}_mel_{m}" for t in range(self.frames) for m in range(self.n_mels)]

    def filterbank(self) -> np.ndarray:
        """(n_mels, 1 + n_fft // 2) float32: librosa's mel filters (Slaney scale and norm)."""
        try:
            from librosa.filters import mel
        except ImportError:
            raise DataError(f"log-mel features need librosa's mel filters: {INSTALL}.") from None
        return mel(
            sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin,
            fmax=self.fmax,
        ).astype(np.float32)  # fmt: skip

    def encode(self, waveforms: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(num_clips, samples) waveforms -> (num_clips, frames, n_mels) float32 log-mel dB.

        Raises:
            DataError: clips of another length than `samples`.
        """
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != self.samples:
            raise DataError(
                f"audio inputs have shape {waveforms.shape[1:]} per clip; this run hears clips "
                f"of {self.samples} samples ({self.seconds:g} s at {self.sample_rate} Hz). Give "
                "audio files, or waveforms of that length at that rate."
            )
        filterbank = torch.from_numpy(self.filterbank())  # (n_mels, frequencies)
        window = torch.hann_window(self.n_fft, periodic=True)
        parts = [np.zeros((0, *self.shape), dtype=np.float32)]
        for start in range(0, len(waveforms), chunk):
            clips = torch.from_numpy(waveforms[start : start + chunk])
            parts.append(self.compute(clips, window, filterbank).numpy())
        return np.concatenate(parts)

    def compute(
        self, clips: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor
    ) -> torch.Tensor:
        """(clips, samples) float32 waveforms -> (clips, frames, n_mels) log-mel dB, on the
        clips' device: the one computation `encode` (host, for the scaler's statistics) and
        `torchloom.models.audio.LogMelInput` (the model's device, every batch) share.

        `window`: `torch.hann_window(n_fft, periodic=True)`; `filterbank`: `filterbank()` as a
        tensor, both on the clips' device."""
        spectrum = torch.stft(
            clips, self.n_fft, self.hop_length, window=window, center=True,
            pad_mode="constant", return_complex=True,
        )  # fmt: skip  # (clips, frequencies, frames)
        mel = filterbank @ (spectrum.real**2 + spectrum.imag**2)  # (clips, n_mels, frames)
        decibels = 10 * torch.log10(mel.clamp(min=1e-10))
        loudest = decibels.amax(dim=(1, 2), keepdim=True)
        decibels = torch.maximum(decibels, loudest - self.top_db)
        return decibels.transpose(1, 2).contiguous()  # (clips, frames, n_mels)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> LogMel:
        return cls(**payload)


def soundfile_module():
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: the module is there, libsndfile is not
        raise DataError(f"audio files are read with soundfile: {INSTALL}.") from None
    return soundfile


def read_clip(path: str | Path, sample_rate: int, samples: int) -> np.ndarray:
    """One audio file as a (samples,) float32 mono waveform at `sample_rate`: channels averaged,
    resampled, padded with silence or cut at its end.

    Raises:
        DataError: a file that cannot be decoded, or one holding NaN or infinite samples.
    """
    soundfile = soundfile_module()
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as error:  # LibsndfileError included
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: cannot be read as audio ({reason}).") from None
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples. Replace the file.")
    return fit_length(resample(data.mean(axis=1), rate, sample_rate), samples)


def resample(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`waveform` at `rate` Hz resampled to `target` Hz with libsoxr (SoX's resampler, at its
    high quality setting), float32."""
    if rate == target:
        return np.asarray(waveform, dtype=np.float32)
    try:
        import soxr
    except ImportError:
        raise DataError(f"resampling audio needs soxr: {INSTALL}.") from None
    return soxr.resample(np.asarray(waveform, dtype=np.float32), rate, target)


def fit_length(waveform: np.ndarray, samples: int) -> np.ndarray:
    """The first `samples` of `waveform`, padded with zeros (silence) at the end when short."""
    clip = np.zeros(samples, dtype=np.float32)
    kept = waveform[:samples]
    clip[: len(kept)] = kept
    return clip


def audio_folder(
    path: str | None = None,
    sample_rate: int = 16000,
    seconds: float = 1.0,
    mel: dict | None = None,
    group_by: str | None = None,
) -> Table:
    """Clips sorted into one folder per class: `path/<class name>/*.wav|flac|ogg` (soundfile).

    Args:
        path: the root folder; each subfolder is a class (sorted by name).
        sample_rate: every clip is resampled to this rate (Hz).
        seconds: every clip is padded with silence or cut at its end to this length.
        mel: the log-mel spectrogram's parameters (see `LogMel`): n_mels, n_fft, hop_length,
            fmin, fmax, top_db.
        group_by: a regular expression matched at the start of each file name; clips whose
            match (its first group, if it has one) is the same are one speaker, held out
            together, so no validation or test speaker is heard in training. E.g. `^[^_]+` for
            Speech Commands' `<speaker>_nohash_<n>.wav`. None: clips are held out one by one.

    Returns:
        A `Table` of (num_clips, samples) float32 waveforms; `Table.audio` holds the features'
        parameters and `Table.groups` the speakers.
    """
    features = LogMel.from_options(sample_rate, seconds, mel)
    files, classes = audio_files(path)
    assert path is not None  # audio_files refuses None
    groups = None if group_by is None else speakers(files, group_by)
    return clips_table(files, classes, features, Path(path).resolve().name, groups)


def clips_table(
    files: list[tuple[Path, int]],
    classes: list[str],
    features: LogMel,
    name: str,
    groups: np.ndarray | None,
    test_start: int | None = None,
    group_kinds: np.ndarray | None = None,
) -> Table:
    """Every (file, class index) read at `features`' rate and length, as one `Table`.

    Raises:
        DataError: naming every file (the first five) that cannot be read.
    """
    clips, problems = [], []
    for file, _ in files:
        try:
            clips.append(read_clip(file, features.sample_rate, features.samples))
        except DataError as error:
            problems.append(str(error))
    if problems:
        more = f" And {len(problems) - 5} more." if len(problems) > 5 else ""
        raise DataError(
            f"{len(problems)} of {len(files)} clips cannot be read: {' '.join(problems[:5])}"
            f"{more} Remove or replace these files."
        )
    return Table(
        np.stack(clips), np.asarray([label for _, label in files], dtype=np.int64),
        "classification", classes, features.feature_names(), name, test_start=test_start,
        audio=features.to_json(), groups=groups, group_kinds=group_kinds,
    )  # fmt: skip


def audio_files(path: str | None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) for every clip under path/<class>/, and the class names."""
    return class_folder_files(path, "audio_folder", "clips", AUDIO_SUFFIXES)


def speakers(files: list[tuple[Path, int]], group_by: str) -> np.ndarray:
    """The speaker of each file: what `group_by` matches at the start of its name."""
    try:
        pattern = re.compile(group_by)
    except (re.error, TypeError) as error:
        raise DataError(
            f"data.group_by: not a regular expression ({error}): {group_by!r}."
        ) from None
    which = 1 if pattern.groups else 0  # the first group, or the whole match
    names = []
    for file, _ in files:
        match = pattern.match(file.name)
        if match is None or not match.group(which):
            raise DataError(
                f"data.group_by: {group_by!r} does not match the start of '{file.name}' "
                f"({file.parent}); every clip needs a speaker. Fix the pattern or rename the "
                "file."
            )
        names.append(match.group(which))
    return np.asarray(names)


def clip_files(path: Path) -> list[Path]:
    """The clips to predict: `path` itself (an audio file), or every audio file in the folder
    `path` and its subfolders, sorted.

    Raises:
        DataError: no such file, a file that is not audio, or a folder without clips.
    """
    if path.is_dir():
        files = sorted(
            f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
        )
        if not files:
            raise DataError(
                f"{path}: no clips ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder or below."
            )
        return files
    if not path.is_file():
        raise DataError(f"no such input file '{path}'. Give an audio file or a folder of clips.")
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise DataError(
            f"{path}: this run hears audio; expected a {', '.join(sorted(AUDIO_SUFFIXES))} file, "
            "a folder of them, or a .npy array of waveforms at the run's sample rate."
        )
    return [path]


def waveforms(inputs, features: LogMel) -> np.ndarray:
    """Raw audio for prediction as (num_clips, samples) float32 at the run's rate.

    Args:
        inputs: a path (str or Path) or a list of paths of audio files, read, resampled and
            made mono as training read them; or numbers: one waveform (samples,) or several
            (num_clips, length), at `features.sample_rate`.
        features: the run's `LogMel` (its rate and clip length).

    Every clip is padded with silence or cut at its end to the run's length, as in training.

    Raises:
        DataError: a file that cannot be read, or numbers of another shape.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    paths = isinstance(inputs, list | tuple) and all(isinstance(i, str | Path) for i in inputs)
    if paths and inputs:
        rate, samples = features.sample_rate, features.samples
        return np.stack([read_clip(path, rate, samples) for path in inputs])
    try:
        array = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"predict: audio inputs are file paths or waveforms (numbers), got "
            f"{type(inputs).__name__} ({error})."
        ) from None
    if array.ndim == 1:
        array = array[None]  # one waveform
    if array.ndim != 2 or not array.shape[1]:
        raise DataError(
            f"predict: waveforms should be (num_clips, samples) at {features.sample_rate} Hz, "
            f"got shape {array.shape}. Or give audio files."
        )
    return np.stack([fit_length(row, features.samples) for row in array])
