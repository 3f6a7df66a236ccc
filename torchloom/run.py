"""A finished (or reloaded) run: the trained model, its task, data and directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from torchloom.config import Config
from torchloom.data import Data, Preprocess, Split
from torchloom.data.preprocess import arrange_inputs
from torchloom.errors import DataError, did_you_mean
from torchloom.tasks import Task
from torchloom.tasks.base import BatchLoss
from torchloom.train.loop import Evaluator

if TYPE_CHECKING:
    from torchloom.rundir import Background


class Run:
    """What `torchloom.fit` returns and `torchloom.load_run` rebuilds.

    Attributes:
        model: the trained `nn.Module`, in eval mode after training.
        task: the task (loss defaults, metrics, predictions).
        data: the data it trained on, or None for a reloaded run without data.
        config: the resolved config.
        history: one dict of logs per epoch.
        dir: the run directory, or None when nothing was written.
        preprocess: what prediction applies to raw inputs.
        diagnostics: what the doctor reads (gradient, update and activation samples, data
            facts), or None when `trainer.diagnostics_every` was off.
        summary: what the run directory's summary.json holds (None when nothing was written).
        pending: the report being drawn after `fit` returned, until `wait()`; else None.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        task: Task,
        loss_fn: BatchLoss,
        config: Config,
        preprocess: Preprocess,
        data: Data | None = None,
        history: list[dict] | None = None,
        directory: Path | None = None,
    ):
        self.model = model
        self.task = task
        self.loss_fn = loss_fn
        self.config = config
        self.preprocess = preprocess
        self.data = data
        self.history = history or []
        self.dir = directory
        self.diagnostics: dict | None = None
        self.summary: dict | None = None  # what summary.json holds, for a run fit just wrote
        self.pending: Background | None = None  # the report being drawn on a thread (`wait`)

    def wait(self) -> Run:
        """Wait until the run directory's plots and report (written on a thread after `fit`
        returns) and any upload of it are done; raises what went wrong there. Returns the run.

        Example:
            >>> run = torchloom.fit("mlp", data, epochs=5, output_dir="runs").wait()
            >>> (run.dir / "report.html").is_file()
            True
        """
        pending = self.pending
        if pending is not None and not pending.running_here():  # the report's own doctor
            pending.wait()
            self.pending = None
        return self

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def evaluate(self, split: str | Split = "test") -> dict[str, float]:
        """Loss and task metrics on a split ("train", "val", "test") or a given `Split`.

        Returns:
            A flat dict of floats, e.g. `{"loss": ..., "accuracy": ..., "f1_macro": ...}`.

        Raises:
            DataError: the run has no data loaded, or no such split.
        """
        if isinstance(split, str):
            if self.data is None:
                raise DataError(
                    "this run has no data attached; pass a Split, or load the run with its data."
                )
            split = self.data.split(split)
        evaluator = Evaluator(self.task, self.loss_fn, self.config.trainer.batch_size, self.device)
        return evaluator(self.model, split.to(self.device))

    def predict(self, features, *, preprocessed: bool = False) -> dict[str, np.ndarray]:
        """Predict for raw inputs, preprocessed as training did.

        Args:
            features: (num_samples, num_features) array-like of raw values; images as
                (num_samples, channels, height, width), (num_samples, height, width, channels)
                or, for one channel, (num_samples, height, width); for text runs, raw strings
                (a list, or one string), tokenized with the run's saved vocabulary; for audio
                runs, a path or a list of paths of audio files (.wav, .flac, .ogg), or waveforms
                (num_samples, samples) at the run's rate, which the model's front end turns into
                log-mel spectrograms as in training.
                Tables trained with text columns or `data.missing` also take raw rows (an
                object array or a pandas DataFrame of the input columns) with blanks (NaN or
                None), filled and encoded as training did.
            preprocessed: the inputs are already scaled (skip the saved preprocessing); for
                text, (num_samples, length) token ids; for audio, waveforms (num_samples,
                samples) at the run's rate and length (what the model's front end takes).

        Returns:
            Classification: {"class": (n,) int, "probabilities": (n, num_classes)};
            regression: {"value": (n, num_targets)}; multilabel: {"labels": (n, num_labels)
            0/1 at the run's thresholds, "probabilities": (n, num_labels)}; anomaly:
            {"score": (n,) reconstruction error, "anomaly": (n,) 0/1 at the saved threshold}.
        """
        return self.predict_inputs(self.model_inputs(features, preprocessed=preprocessed))

    def model_inputs(self, features, *, preprocessed: bool = False) -> np.ndarray:
        """Raw inputs as the model takes them (what `predict` does before the model): token
        ids for text, filled, encoded and scaled features, images arranged and scaled.

        Raises:
            DataError: inputs that do not fit the run (a NaN it cannot fill, a wrong shape).
        """
        if isinstance(features, torch.Tensor):  # numpy reads no bfloat16: widen it first
            features = features.detach().cpu()
            features = features.float() if features.dtype == torch.bfloat16 else features
            features = features.numpy()
        if self.preprocess.tokenizer is not None:
            array = self._text_inputs(features, preprocessed)
        elif self.preprocess.audio is not None and not preprocessed:  # files or waveforms
            from torchloom.data.audio import waveforms

            array = self.preprocess.transform(waveforms(features, self.preprocess.audio))
        elif self.preprocess.columns is not None and not preprocessed:
            if hasattr(features, "columns"):  # a DataFrame: its input columns, by name
                features = features[self._named_columns(features)].to_numpy(dtype=object)
            array = self.preprocess.transform(features)  # fills, encodes, scales
        else:
            try:
                array = np.asarray(features, dtype=np.float32)
            except (TypeError, ValueError) as error:
                raise DataError(
                    f"predict: inputs must be numbers, as the run was trained on ({error}). "
                    "Give a numeric array of shape (num_samples, ...)."
                ) from None
            expected = tuple(self.preprocess.extra.get("input_shape", array.shape[1:]))
            # Images may come channels-last, without the channel axis, or as flat rows.
            array = arrange_inputs(array, expected)
            if not preprocessed:
                array = self.preprocess.transform(array)
            if array.ndim == 2 and np.isnan(array).any():
                row, column = (int(i) for i in np.argwhere(np.isnan(array))[0])
                raise DataError(
                    f"missing value (NaN) in input row {row}, feature "
                    f"'{self.preprocess.feature_names[column]}': this run was trained without "
                    "data.missing, so it cannot fill it. Fill the value, or retrain with "
                    "data.missing (e.g. mean)."
                )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # An infinite input (or one float32 cannot hold once scaled) gives NaN outputs.
            row = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0])
            raise DataError(
                f"input row {row}: a value is infinite, NaN, or too large for the model's "
                "float32 once scaled. Give finite numbers within the range the run was trained on."
            )
        return array

    def _named_columns(self, frame) -> list[str]:
        """The run's input columns, each of which the DataFrame `frame` must have."""
        names = self.preprocess.input_columns
        given = [str(column) for column in frame.columns]
        missing = [name for name in names if name not in given]
        if missing:
            raise DataError(
                f"inputs have no column '{missing[0]}'.{did_you_mean(missing[0], given)} The "
                f"model reads {len(names)} columns: {', '.join(names)}."
            )
        return names

    def predict_inputs(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """`predict` on inputs `model_inputs` made: the model in batches, then the task's
        reading of its outputs (see `predict` for what comes back)."""
        inputs = torch.from_numpy(array).to(self.device)
        batch_size = self.config.trainer.batch_size
        self.model.eval()
        with torch.no_grad():
            chunks = [
                self.model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)
            ] or [self.model(inputs)]
        outputs: Any  # a tensor, or a tuple of them for a VAE (the task reads either)
        if isinstance(chunks[0], tuple):  # a VAE's (reconstruction, mean, log_variance)
            outputs = tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))
        else:
            outputs = torch.cat(chunks)
        predictions = self.task.predict_batch(outputs, inputs)
        return {key: value.cpu().numpy() for key, value in predictions.items()}

    def _text_inputs(self, texts, preprocessed: bool) -> np.ndarray:
        """(num_samples, max_len) token ids for raw strings, as training tokenized them (or
        (num_samples, dimensions) embeddings with a sentence encoder)."""
        vocab_size = self.preprocess.vocab_size
        if preprocessed:
            try:  # sentence embeddings, or token ids
                ids = np.asarray(texts, dtype=np.float32 if vocab_size is None else None)
            except (TypeError, ValueError) as error:
                raise DataError(
                    f"preprocessed text inputs: expected a (num_samples, ...) array ({error})."
                ) from None
            if vocab_size is None:
                return ids
            if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
                raise DataError(
                    f"preprocessed text inputs: expected (num_samples, length) integer token ids, "
                    f"got an array of {ids.dtype} with shape {ids.shape}."
                )
            if ids.size and not 0 <= ids.min() <= ids.max() < vocab_size:
                raise DataError(
                    f"preprocessed text inputs: token ids run from {ids.min()} to {ids.max()}; "
                    f"the run's vocabulary has ids 0..{vocab_size - 1}."
                )
            return ids.astype(np.int64, copy=False)
        if isinstance(texts, str):
            texts = [texts]  # one text, not a sequence of characters
        if hasattr(texts, "columns"):  # a DataFrame: its text column (not its column names)
            texts = texts[self._named_columns(texts)[0]]
        try:
            texts = list(texts)
        except TypeError:
            raise DataError(
                f"text inputs: expected a string or a list of strings, got "
                f"{type(texts).__name__} ({texts!r:.60})."
            ) from None
        # An object array keeps each item as given: the tokenizer names any that is not a string.
        return self.preprocess.transform(np.asarray(texts, dtype=object))

    def sample(self, count: int, seed: int = 0, *, scaled: bool = False) -> np.ndarray:
        """`count` new samples from a generative run (vae, gan), in the data's own units.

        Args:
            count: how many samples (>= 1).
            seed: seeds the noise, so the same seed gives the same samples.
            scaled: return them in the standardized space the model works in.

        Returns:
            (count, *input_shape) float32, e.g. (count, 1, 8, 8) for digits as images.

        Raises:
            DataError: a run whose model does not generate, or a bad count.
        """
        if not hasattr(self.model, "sample"):
            raise DataError(
                f"sample: this is a {self.task.name} run with a model that does not generate; "
                "train a vae or gan task."
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise DataError(f"sample: count must be a whole number >= 1, got {count!r}.")
        from torchloom.tasks.generation import unscale

        generator = torch.Generator().manual_seed(seed)
        # nn.Module types the attributes it holds as Tensor | Module: mypy cannot see a method.
        samples = self.model.sample(count, generator).float().cpu().numpy()  # type: ignore[operator]
        return samples if scaled else unscale(samples, self.preprocess)

    def __repr__(self) -> str:
        where = f" at {self.dir}" if self.dir else ""
        return f"Run({self.task.name}, {len(self.history)} epochs{where})"
