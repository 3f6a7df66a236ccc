"""A torchloom network inside a scikit-learn Pipeline, tuned by GridSearchCV (docs/sklearn.md).

Run: python examples/sklearn_grid_search.py
"""

from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from torchloom.sklearn import NeuralNetClassifier

features, labels = load_iris(return_X_y=True)
pipeline = Pipeline(
    [
        ("scale", StandardScaler()),
        ("net", NeuralNetClassifier("mlp", {"hidden": [16]}, epochs=30)),
    ]
)
grid = {"net__lr": [0.001, 0.01], "net__model_options": [{"hidden": [16]}, {"hidden": [64, 32]}]}
search = GridSearchCV(pipeline, grid, cv=3).fit(features, labels)
print("best:", search.best_params_, f"cv accuracy {search.best_score_:.3f}")
scores = cross_val_score(search.best_estimator_, features, labels, cv=5)
print(f"5-fold accuracy: {scores.mean():.3f} ({', '.join(f'{s:.2f}' for s in scores)})")
