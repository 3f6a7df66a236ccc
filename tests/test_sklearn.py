"""torchloom's scikit-learn estimators: scikit-learn's own estimator checks, and a real
Pipeline inside GridSearchCV and cross_val_score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from torchloom.errors import TorchloomError
from torchloom.sklearn import NeuralNetClassifier, NeuralNetRegressor

# Small and quick, yet enough to pass the checks' quality bars (accuracy > 0.83 on three blobs,
# R² > 0.5 on a regression problem): a hidden layer of 16, 10 epochs of Adam at 0.03, batch 100.
QUICK = {"model_options": {"hidden": [16]}, "epochs": 10, "batch_size": 100, "lr": 0.03}
ESTIMATORS = [NeuralNetClassifier(**QUICK), NeuralNetRegressor(**QUICK)]


def expected_failed_checks(estimator) -> dict[str, str]:
    """Checks we do not pass, each with the reason (listed in docs/sklearn.md)."""
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def iris():
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    return features, names


@pytest.mark.slow
def test_pipeline_in_grid_search_and_cross_validation_on_iris():
    """A scaler and the network in one Pipeline, tuned by GridSearchCV and scored by
    cross_val_score. Measured: best lr 0.01 (0.001 underfits in 30 epochs), held-out accuracy
    0.97 (37 of 38), 5-fold cross-validation mean 0.96."""
    from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = iris()
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("net", NeuralNetClassifier(model_options={"hidden": [16]}, epochs=30)),
        ]
    )
    search = GridSearchCV(pipeline, {"net__lr": [0.001, 0.01]}, cv=3)
    search.fit(train_x, train_y)
    assert search.best_params_ == {"net__lr": 0.01}
    assert search.score(test_x, test_y) >= 0.94
    assert set(search.predict(test_x)) <= {"setosa", "versicolor", "virginica"}
    scores = cross_val_score(search.best_estimator_, features, labels, cv=5)
    assert scores.mean() >= 0.93, scores


def test_labels_come_back_as_given_with_probabilities_in_classes_order():
    features, labels = iris()
    classifier = NeuralNetClassifier(epochs=5, lr=0.01).fit(features, labels)
    assert list(classifier.classes_) == ["setosa", "versicolor", "virginica"]
    probabilities = classifier.predict_proba(features)
    assert probabilities.shape == (150, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    predicted = classifier.predict(features)
    assert (predicted == classifier.classes_[probabilities.argmax(axis=1)]).all()


def test_partial_fit_continues_the_same_optimizer_one_epoch_per_call():
    features, labels = iris()
    classifier = NeuralNetClassifier(epochs=2, batch_size=50)
    with pytest.raises(ValueError) as error:
        classifier.partial_fit(features, labels)
    assert str(error.value).startswith("classes: required on the first call to partial_fit")
    classes = np.unique(labels)
    classifier.partial_fit(features[:100], labels[:100], classes=classes)
    optimizer = classifier.optimizer_
    first = next(iter(optimizer.state.values()))
    assert int(first["step"]) == 2  # 100 samples in batches of 50
    losses = []
    for _ in range(5):
        classifier.partial_fit(features, labels)
        losses.append(classifier.history_[-1]["train/loss"])
    assert classifier.optimizer_ is optimizer
    assert int(next(iter(optimizer.state.values()))["step"]) == 2 + 5 * 3  # Adam's moments kept
    assert classifier.epochs_trained_ == 6 and len(classifier.history_) == 6
    assert losses == sorted(losses, reverse=True)  # each call trains further
    with pytest.raises(ValueError) as error:
        classifier.partial_fit(features[:2], np.array(["daisy", "setosa"]))
    assert str(error.value) == (
        "y: label 'daisy' is not among classes ['setosa', 'versicolor', 'virginica']; pass "
        "every label in classes on the first call."
    )


class TinyNet(nn.Module):
    """A user's own module that asks for its sizes."""

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    def forward(self, inputs):
        return self.layers(inputs)


def test_a_module_class_gets_its_sizes_from_the_data():
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    features, labels = load_wine(return_X_y=True)
    features = StandardScaler().fit_transform(features)
    classifier = NeuralNetClassifier(TinyNet, {"hidden": 12}, epochs=20, lr=0.01)
    classifier.fit(features, labels)
    assert isinstance(classifier.module_, TinyNet)
    assert classifier.module_.layers[0].in_features == 13
    assert classifier.module_.layers[2].out_features == 3
    assert classifier.score(features, labels) > 0.95


def test_training_equals_plain_pytorch_with_the_same_seed():
    """The estimator's training is the textbook loop: same seed, same weights as plain PyTorch."""
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    features, labels = load_wine(return_X_y=True)
    features = StandardScaler().fit_transform(features).astype(np.float32)
    classifier = NeuralNetClassifier(
        TinyNet,
        {"hidden": 8},
        epochs=5,
        batch_size=64,
        optimizer={"name": "sgd", "momentum": 0.5},
        lr=0.1,
        seed=3,
        fit_options={"shuffle": False},
    ).fit(features, labels)

    torch.manual_seed(3)
    network = TinyNet(13, 3, hidden=8)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.5)
    inputs, targets = torch.from_numpy(features), torch.from_numpy(labels)
    for _ in range(5):
        for start in range(0, len(inputs), 64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(
                network(inputs[start : start + 64]), targets[start : start + 64]
            )
            loss.backward()
            optimizer.step()
    for name, value in network.state_dict().items():
        torch.testing.assert_close(classifier.module_.state_dict()[name], value)


def test_options_reach_torchloom_fit_and_mistakes_name_the_fix():
    features, labels = iris()
    classifier = NeuralNetClassifier(
        epochs=40,
        lr=0.01,
        validation_fraction=0.2,
        early_stopping={"patience": 2, "min_delta": 0.5},
        fit_options={"scheduler": "cosine"},
    ).fit(features, labels)
    assert "val/loss" in classifier.history_[0]
    assert len(classifier.history_) < 40  # stopped early: no epoch improves val/loss by 0.5
    with pytest.raises(TorchloomError) as error:
        NeuralNetClassifier(fit_options={"epochs": 3}).fit(features, labels)
    assert str(error.value) == (
        "fit_options: 'epochs' is a parameter of NeuralNetClassifier itself (or set by it); "
        "give it as NeuralNetClassifier(epochs=...)."
    )
    with pytest.raises(TorchloomError, match=r"but validation_fraction is 0; set validation"):
        NeuralNetClassifier(early_stopping={"patience": 2}).fit(features, labels)
    with pytest.raises(TypeError, match=r"unexpected option 'clip_nrom'\. Did you mean"):
        NeuralNetClassifier(fit_options={"clip_nrom": 1.0}).fit(features, labels)
