"""scikit-learn estimators around `torchloom.fit`: a network as a Pipeline / GridSearchCV step.

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torchloom.sklearn import NeuralNetClassifier

    pipeline = make_pipeline(StandardScaler(), NeuralNetClassifier("mlp", {"hidden": [32]}))
    pipeline.fit(features, labels).predict(new_features)   # labels may be strings

The constructor stores its arguments as given (scikit-learn's rule: `clone` and `set_params`
rebuild estimators from them); everything is checked and built in `fit`. See docs/sklearn.md.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from torchloom import api
from torchloom import data as data_module
from torchloom import models as models_module
from torchloom.errors import TorchloomError
from torchloom.train.callbacks import Callback, Dispatcher, History, TrainState
from torchloom.train.loop import fit_loop

__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]

# Constructor parameters that become `torchloom.fit` options; `fit_options` may not repeat them.
_OWN_OPTIONS = ("epochs", "batch_size", "optimizer", "loss", "seed", "device", "early_stopping")


class _KeepOptimizer(Callback):
    """Remembers the optimizer `fit` built, so `partial_fit` continues with its state."""

    def on_fit_end(self, state: TrainState) -> None:
        self.optimizer = state.optimizer
        self.step = state.step


class _NeuralNet(BaseEstimator):
    """What the classifier and the regressor share: options, model building, the training."""

    _task = ""

    def __init__(
        self,
        model: Any = "mlp",
        model_options: dict | None = None,
        *,
        epochs: int = 50,
        batch_size: int = 32,
        optimizer: str | dict = "adam",
        lr: float | None = None,
        loss: str | dict | None = None,
        validation_fraction: float = 0.0,
        early_stopping: dict | None = None,
        fit_options: dict | None = None,
        seed: int = 0,
        device: str = "cpu",
        verbose: int = 0,
    ):
        # scikit-learn's convention, kept on purpose: one flat parameter per option, stored
        # verbatim, so GridSearchCV can search over `lr` or `epochs` directly. The defaults are
        # written out because scikit-learn reads them from this signature (get_params, clone);
        # they are the config's, but for the ones docs/sklearn.md lists with the reason, and
        # tests/test_options.py holds them to that.
        self.model = model
        self.model_options = model_options
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.loss = loss
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.fit_options = fit_options
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # --- building ---------------------------------------------------------------------------
    def _options(self, epochs: int, validation_fraction: float, partial: bool) -> dict:
        """The `torchloom.fit` keyword options these parameters stand for (`partial`: the
        first `partial_fit` call, one epoch without early stopping)."""
        extra = dict(self.fit_options or {})
        repeated = [key for key in extra if key in _OWN_OPTIONS or key in ("val", "test", "task")]
        if repeated:
            raise TorchloomError(
                f"fit_options: '{repeated[0]}' is a parameter of {type(self).__name__} itself "
                f"(or set by it); give it as {type(self).__name__}({repeated[0]}=...)."
            )
        optimizer = (
            {"name": self.optimizer} if isinstance(self.optimizer, str) else dict(self.optimizer)
        )
        if self.lr is not None:
            optimizer["lr"] = self.lr
        options = {
            "progress": bool(self.verbose),
            "diagnostics_every": 0,  # no doctor samples: nothing reads them here
            **extra,
            "epochs": epochs,
            "batch_size": self.batch_size,
            "optimizer": optimizer,
            "seed": self.seed,
            "device": self.device,
            "output_dir": None,  # no run directory, no report
        }
        if self.loss is not None:
            options["loss"] = self.loss
        if self.early_stopping is not None and not partial:
            if not validation_fraction:
                raise TorchloomError(
                    f"early_stopping: {self.early_stopping!r} monitors a validation split, but "
                    "validation_fraction is 0; set validation_fraction=0.1 (or more)."
                )
            options["early_stopping"] = dict(self.early_stopping)
        return options

    def _build_module(self, num_outputs: int) -> nn.Module:
        """A fresh network: a zoo name, an `nn.Module` class or factory, or a module to copy."""
        options = dict(self.model_options or {})
        if isinstance(self.model, str):
            return models_module.build(self.model, **options)
        if isinstance(self.model, nn.Module):
            if options:
                raise TorchloomError(
                    "model_options: given with a module instance, which is already built; pass "
                    "the class as model=MyModule to have the options applied."
                )
            return copy.deepcopy(self.model)  # never train the parameter itself
        if callable(self.model):
            accepted: Mapping[str, inspect.Parameter]
            try:
                accepted = inspect.signature(self.model).parameters
            except (TypeError, ValueError):
                accepted = {}
            # A factory that asks for its sizes gets them from the data.
            sizes = {"in_features": self.n_features_in_, "num_outputs": num_outputs}
            for key, value in sizes.items():
                if key in accepted and key not in options:
                    options[key] = value
            module = self.model(**options)
            if isinstance(module, nn.Module):
                return module
        raise TorchloomError(
            f"model: expected a zoo name ({', '.join(models_module.names())}), an nn.Module "
            f"class or a function returning one; got {self.model!r}."
        )

    def _train(self, features: np.ndarray, targets: np.ndarray, classes, partial: bool) -> None:
        """Build a fresh network and train it with `torchloom.fit`; keep what predicting needs.

        `partial`: the first `partial_fit` call (one epoch, all data trains); else `fit`.
        """
        epochs, val = (1, 0.0) if partial else (self.epochs, self.validation_fraction)
        data = data_module.from_arrays(
            features, targets, task=self._task, val=val, test=0.0, seed=self.seed, classes=classes
        )
        keep = _KeepOptimizer()
        api.seed_everything(self.seed)  # a module class initializes as it is built: seeded
        run = api.fit(
            self._build_module(data.num_outputs),
            data,
            callbacks=[keep],
            **self._options(epochs, val, partial),
        )
        run.data = None  # the estimator keeps the network, not a copy of the training data
        self.run_ = run
        self.module_ = run.model
        self.optimizer_ = keep.optimizer
        self.history_ = run.history
        self.epochs_trained_ = len(run.history)

    def _continue(self, features: np.ndarray, targets: np.ndarray) -> None:
        """One more epoch over new data with the same network and optimizer (`partial_fit`).

        Builds with `fit`'s builder and runs torchloom's one loop; the learning rate stays as
        the optimizer holds it (a scheduler, early stopping, gradient accumulation and mixed
        precision apply to `fit` only).
        """
        config = self.run_.config
        if config.trainer.privacy is not None:
            raise TorchloomError(
                "partial_fit: cannot continue a private network (fit_options privacy): each call "
                "would start a new privacy accountant, so the epsilon the calls spend together "
                "would be counted nowhere. Train it with fit, which accounts for every epoch."
            )
        seed = self.seed + self.epochs_trained_  # a new order each call, reproducible
        config = config.model_copy(
            update={
                "trainer": config.trainer.model_copy(
                    update={
                        "epochs": 1,
                        "seed": seed,
                        "accumulate": 1,
                        "precision": "32",
                        "early_stopping": None,
                        "progress": False,
                    }
                ),
                "scheduler": config.scheduler.model_copy(update={"name": None, "options": {}}),
            }
        )
        api.seed_everything(seed)
        data = data_module.from_arrays(
            features, targets, task=self._task, val=0.0, test=0.0, classes=self.run_.task.classes
        )
        setup = api.build(self.module_, data, config, self.run_.device, optimizer=self.optimizer_)
        state = TrainState(setup, callbacks=[History()])
        fit_loop(setup, state, Dispatcher(state.callbacks))
        self.module_.eval()
        self.history_ = [*self.history_, {**state.history[-1], "epoch": self.epochs_trained_ + 1}]
        self.epochs_trained_ += 1

    def _outputs(self, features) -> dict[str, np.ndarray]:
        """The task's predictions (`class`/`probabilities` or `value`) for validated inputs."""
        check_is_fitted(self, "module_")
        features = validate_data(self, features, reset=False, dtype=(np.float64, np.float32))
        return self.run_.predict(np.asarray(features, dtype=np.float32), preprocessed=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # seeded: two fits give the same network
        return tags


class NeuralNetClassifier(ClassifierMixin, _NeuralNet):
    """A torchloom network as a scikit-learn classifier.

    Args:
        model: a zoo name ("mlp", "layers", ...), an `nn.Module` class or a function returning
            one (given `in_features` and `num_outputs` when its signature asks for them), or a
            module instance (copied, then trained).
        model_options: keyword options for the builder, e.g. `{"hidden": [64, 32]}`.
        epochs, batch_size: training length and mini-batch size.
        optimizer: a name ("adam", "sgd", "adamw", "rmsprop") or a dict with its options.
        lr: learning rate; overrides one in `optimizer` (None: the optimizer's default).
        loss: a loss name or dict; None: cross-entropy.
        validation_fraction: held out of `fit`'s data (stratified) and scored each epoch.
        early_stopping: e.g. `{"patience": 5}`; used when `validation_fraction` > 0.
        fit_options: any other `torchloom.fit` option (scheduler, init, clip_norm, ...).
        seed: seeds initialization, shuffling and the split; equal seeds give equal networks.
        device: "cpu", "cuda", "auto", ...
        verbose: 1 shows torchloom's progress bar.

    Defaults are the config's (docs/config.md) but for batch_size 32, optimizer "adam",
    validation_fraction 0.0, device "cpu" and verbose 0; docs/sklearn.md says why.

    Attributes:
        classes_: the labels seen in `fit` (or given to the first `partial_fit`), sorted.
        n_features_in_, feature_names_in_: the inputs `fit` saw.
        module_: the trained `nn.Module` (outputs logits, one per class in `classes_` order).
        history_: one dict of logs per epoch.
        run_: the torchloom `Run` (without its training data).

    Example:
        >>> NeuralNetClassifier(epochs=30).fit(features, labels).predict_proba(features[:2])
    """

    _task = "classification"

    def fit(self, X, y) -> NeuralNetClassifier:
        """Train a fresh network on features `X` (n_samples, n_features) and labels `y`."""
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        self._train(
            np.asarray(X, dtype=np.float32),
            encoder.transform(y),
            [str(label) for label in self.classes_],
            partial=False,
        )
        return self

    def partial_fit(self, X, y, classes=None) -> NeuralNetClassifier:
        """Train one epoch on `X`, `y`, continuing the network and optimizer state.

        Args:
            X: (n_samples, n_features) features.
            y: labels, all among `classes`.
            classes: every label the estimator will ever see; required on the first call.

        Raises:
            ValueError: no `classes` on the first call, a label not in `classes_`, or a
                different number of features than before.
        """
        first_call = not hasattr(self, "module_")
        if first_call and classes is None:
            raise ValueError(
                "classes: required on the first call to partial_fit; give every label, e.g. "
                "partial_fit(X, y, classes=np.unique(all_labels))."
            )
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=first_call)
        check_classification_targets(y)
        if first_call:
            self.classes_ = unique_labels(classes)
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(
                f"classes: {unique_labels(classes).tolist()} differ from the first call's "
                f"{self.classes_.tolist()}; give the same classes, or call fit to start over."
            )
        unseen = np.setdiff1d(unique_labels(y), self.classes_)
        if len(unseen):
            raise ValueError(
                f"y: label {unseen.tolist()[0]!r} is not among classes {self.classes_.tolist()}; "
                "pass every label in classes on the first call."
            )
        indices = np.searchsorted(self.classes_, y)
        if first_call:
            self._train(
                np.asarray(X, dtype=np.float32),
                indices,
                [str(label) for label in self.classes_],
                partial=True,
            )
        else:
            self._continue(np.asarray(X, dtype=np.float32), indices)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, (n_samples, n_classes) in `classes_` order (softmax of logits)."""
        return self._outputs(X)["probabilities"].astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """The most probable label of each sample, as the labels `fit` saw."""
        indices = self._outputs(X)["class"]  # first: raises NotFittedError before fit
        return self.classes_[indices]


class NeuralNetRegressor(RegressorMixin, _NeuralNet):
    """A torchloom network as a scikit-learn regressor; `y` may hold several targets.

    Takes the same parameters as `NeuralNetClassifier` (loss None: mean squared error). Targets
    are used as given: for targets far from unit scale, wrap it in
    `sklearn.compose.TransformedTargetRegressor(regressor, transformer=StandardScaler())`.

    Attributes:
        n_features_in_, module_, history_, run_: as for the classifier.
        n_outputs_: targets per sample.
    """

    _task = "regression"

    def fit(self, X, y) -> NeuralNetRegressor:
        """Train a fresh network on `X` (n_samples, n_features) and targets `y`, (n,) or (n, k)."""
        X, y = validate_data(
            self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True
        )
        self._train(*self._arrays(X, y, reset=True), None, partial=False)
        return self

    def partial_fit(self, X, y) -> NeuralNetRegressor:
        """Train one epoch on `X`, `y`, continuing the network and optimizer state."""
        first_call = not hasattr(self, "module_")
        X, y = validate_data(
            self,
            X,
            y,
            dtype=(np.float64, np.float32),
            multi_output=True,
            y_numeric=True,
            reset=first_call,
        )
        if not first_call and (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(
                f"y: {1 if y.ndim == 1 else y.shape[1]} targets per sample, but the first call "
                f"had {self.n_outputs_}; give the same targets, or call fit to start over."
            )
        if first_call:
            self._train(*self._arrays(X, y, reset=True), None, partial=True)
        else:
            self._continue(*self._arrays(X, y, reset=False))
        return self

    def _arrays(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Float32 features and (n, k) targets; `reset` records the targets' shape."""
        if reset:  # predict answers in the shape fit saw: (n,) or (n, k), (n, 1) included
            self._single_target = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        targets = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        return np.asarray(X, dtype=np.float32), targets

    def predict(self, X) -> np.ndarray:
        """Predicted targets: (n_samples,) when `fit` had one target per sample, else (n, k)."""
        values = self._outputs(X)["value"].astype(np.float64)  # (n, k)
        return values[:, 0] if self._single_target else values

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
