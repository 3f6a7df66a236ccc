"""Preprocessing fitted on the training split only, and saved as JSON for prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Preprocess:
    """What prediction needs to treat new inputs as training did.

    Attributes:
        feature_names: the input columns, in order.
        classes: class names in output-index order (classification), else None.
        task: "classification" or "regression".
        mean, std: per-feature standardization fitted on the training split; None when off.
    """

    feature_names: list[str]
    classes: list[str] | None
    task: str
    mean: list[float] | None = None
    std: list[float] | None = None
    extra: dict = field(default_factory=dict)

    def fit(self, train_features: np.ndarray, standardize: bool) -> Preprocess:
        """Fit the scaler on training features (num_samples, num_features) only."""
        if standardize:
            flat = train_features.reshape(len(train_features), -1).astype(np.float64)
            std = flat.std(axis=0)
            # A constant feature (a border pixel that is always 0) keeps its scale.
            std[std < 1e-12] = 1.0
            self.mean = flat.mean(axis=0).tolist()
            self.std = std.tolist()
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Apply the fitted scaling; returns float32 of the same shape."""
        features = np.asarray(features, dtype=np.float32)
        if self.mean is None:
            return features
        shape = features.shape
        flat = features.reshape(len(features), -1)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((flat - mean) / std).reshape(shape).astype(np.float32)

    def to_json(self) -> dict:
        return {
            "format": 1,
            "task": self.task,
            "feature_names": self.feature_names,
            "classes": self.classes,
            "standardize": None if self.mean is None else {"mean": self.mean, "std": self.std},
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, payload: dict) -> Preprocess:
        scale = payload.get("standardize") or {}
        return cls(
            feature_names=list(payload["feature_names"]),
            classes=payload.get("classes"),
            task=payload["task"],
            mean=scale.get("mean"),
            std=scale.get("std"),
            extra=payload.get("extra", {}),
        )
