"""torchloom's scikit-learn estimators: scikit-learn's own estimator checks, and a real
Pipeline inside GridSearchCV and cross_val_score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from torchloom.sklearn import NeuralNetClassifier, NeuralNetRegressor

# Small and quick, yet enough to pass the checks' quality bars (accuracy > 0.83 on three blobs,
# R² > 0.5 on a regression problem): a hidden layer of 16, 20 epochs of Adam at 0.01.
QUICK = {"model_options": {"hidden": [16]}, "epochs": 20, "batch_size": 64, "lr": 0.01}
ESTIMATORS = [NeuralNetClassifier(**QUICK), NeuralNetRegressor(**QUICK)]


def expected_failed_checks(estimator) -> dict[str, str]:
    """Checks we do not pass, each with the reason (listed in docs/sklearn.md)."""
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
