"""Which input features drove a prediction: integrated gradients and saliency, through Captum.

    explanation = torchloom.explain(run, raw_rows)             # integrated gradients
    explanation.ranking()[:5]                                   # top features, mean |attribution|
    torchloom.explain(run, "test", method="saliency", plot="attributions.png")

Captum is an optional extra (`pip install 'torchloom[explain]'`). Attributions are computed on
the inputs as the model sees them (after the run's scaling), so features on different raw scales
compare fairly. The integrated-gradients baseline is an all-zero input: with standardized data
that is the training mean, so an attribution says how much a feature's departure from the
average sample moved the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from torchloom.errors import DataError, TorchloomError
from torchloom.plotting import drawing, plot_path, pyplot

METHODS = ("integrated_gradients", "saliency")
CAPTUM_MISSING = (
    "explain needs captum, an optional extra that is not installed. Install it with: "
    "pip install 'torchloom[explain]'"
)
PIXEL_NAME = re.compile(r"^pixel_(\d+)_(\d+)$")  # scikit-learn's digits: pixel_<row>_<column>


@dataclass
class Explanation:
    """Attributions of a model's outputs to its input features.

    Attributes:
        method: "integrated_gradients" or "saliency".
        feature_names: one name per input feature, in column order.
        attributions: (num_rows, num_features) attribution of each feature for each row.
        targets: (num_rows,) the output explained for each row (its class index).
        inputs: (num_rows, num_features) the inputs in their raw units (the scaling undone).
        convergence_delta: integrated gradients only: per row, the attributions' sum minus the
            output's change from the baseline (near 0 when the path integral is accurate).
        image_shape: (height, width) when the input is an image, else None.
        plots: PNG files written.
    """

    method: str
    feature_names: list[str]
    attributions: np.ndarray
    targets: np.ndarray
    inputs: np.ndarray
    convergence_delta: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    plots: list[Path] = field(default_factory=list)

    def importance(self) -> np.ndarray:
        """(num_features,) mean absolute attribution over the rows."""
        return np.abs(self.attributions).mean(axis=0)

    def ranking(self) -> list[dict]:
        """Features from most to least important: {feature, importance, mean} each, where `mean`
        is the signed mean attribution (positive: pushed the explained output up)."""
        importance = self.importance()
        mean = self.attributions.mean(axis=0)
        order = np.argsort(-importance, kind="stable")
        return [
            {
                "feature": self.feature_names[i],
                "importance": float(importance[i]),
                "mean": float(mean[i]),
            }
            for i in order
        ]

    def to_json(self, top: int | None = None) -> dict:
        payload = {
            "method": self.method,
            "rows": int(len(self.attributions)),
            "targets": self.targets.tolist(),
            "ranking": self.ranking()[:top],
            "plots": [str(path) for path in self.plots],
        }
        if self.convergence_delta is not None:
            payload["max_abs_convergence_delta"] = float(np.abs(self.convergence_delta).max())
        return payload

    @drawing
    def plot_bars(self, path: str | Path, top: int = 15) -> Path:
        """A horizontal bar chart of the `top` features' mean |attribution| (colour: sign)."""
        plt = pyplot()
        rows = self.ranking()[:top][::-1]  # most important at the top
        figure, axes = plt.subplots(figsize=(6, 0.3 * len(rows) + 1.2))
        colors = ["#c0392b" if row["mean"] >= 0 else "#2980b9" for row in rows]
        axes.barh(
            [row["feature"] for row in rows], [row["importance"] for row in rows], color=colors
        )
        axes.set(
            xlabel="mean |attribution|",
            title=f"{self.method.replace('_', ' ')} (red: raises the output, blue: lowers it)",
        )
        axes.title.set_fontsize(9)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        self.plots.append(Path(path))
        return Path(path)

    @drawing
    def plot_heatmap(self, path: str | Path) -> Path:
        """For image inputs: the (mean) input beside its signed attribution map."""
        if self.image_shape is None:
            raise TorchloomError(
                "plot_heatmap: the input is not image-shaped (no (height, width) shape and no "
                "pixel_<row>_<column> feature names); use plot_bars."
            )
        plt = pyplot()
        height, width = self.image_shape
        image = self.inputs.mean(axis=0).reshape(height, width)
        heat = self.attributions.mean(axis=0).reshape(height, width)
        limit = float(np.abs(heat).max()) or 1.0
        figure, (left, right) = plt.subplots(1, 2, figsize=(7, 3.4))
        left.imshow(image, cmap="gray_r")
        left.set(title="input" if len(self.inputs) == 1 else f"mean of {len(self.inputs)} inputs")
        shown = right.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit)
        right.imshow(image, cmap="gray_r", alpha=0.25)
        right.set(title=f"{self.method.replace('_', ' ')}")
        figure.colorbar(shown, ax=right, fraction=0.046)
        for axes in (left, right):
            axes.set(xticks=[], yticks=[])
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        self.plots.append(Path(path))
        return Path(path)


def refuse_text(run) -> None:
    """Raise for a text run: token ids have no gradient, so attributions would have to go to
    their embeddings, which is not implemented."""
    if run.preprocess.tokenizer is not None:
        raise TorchloomError(
            "explain: text runs are not supported (attributions to token ids need attributions "
            "to their embeddings, which torchloom does not compute yet). Use predict instead."
        )


def explain(
    run,
    inputs,
    *,
    method: str = "integrated_gradients",
    target: int | str | None = None,
    steps: int = 50,
    preprocessed: bool = False,
    plot: str | Path | None = None,
) -> Explanation:
    """Attribute a run's predictions to its input features.

    Args:
        run: a `Run`, or a run directory (loaded without its data).
        inputs: raw rows (array-like, (num_rows, num_features) or one row), or a split name
            ("train", "val", "test") of the run's data (already scaled).
        method: "integrated_gradients" (exact completeness: attributions sum to the output's
            change from the baseline) or "saliency" (|gradient|, one backward pass).
        target: the class to explain, by index or name; None explains each row's predicted
            class (regression: output 0).
        steps: integration steps for integrated gradients.
        preprocessed: the rows are already scaled as in training.
        plot: write a bar chart of the top features to this PNG; for image inputs (8x8 digits)
            also `<name>_heatmap.png`.

    Returns:
        An `Explanation`: `.ranking()`, `.attributions`, `.plot_bars(path)`, `.plot_heatmap(path)`.

    Raises:
        TorchloomError: captum missing (with the pip line), an unknown method or target, inputs
            of the wrong shape.

    Example:
        >>> explanation = torchloom.explain(run, "test")
        >>> explanation.ranking()[0]["feature"]
        'pixel_3_4'
    """
    try:
        import captum.attr  # noqa: F401  (only to say early that it is missing)
    except ImportError:
        raise TorchloomError(CAPTUM_MISSING) from None
    if method not in METHODS:
        from torchloom.errors import unknown_name_message

        raise TorchloomError(unknown_name_message("explanation method", method, METHODS))
    if isinstance(run, str | Path):
        from torchloom.api import load_run

        run = load_run(run, data=False)
    refuse_text(run)
    if plot is not None:
        plot = plot_path(plot, "explain: plot")
    features = _model_inputs(run, inputs, preprocessed)
    model = run.model.eval()
    device = run.device
    batch = torch.from_numpy(features).to(device)
    with torch.no_grad():
        outputs = model(batch)
    targets = _targets(run, target, outputs)
    flat, delta = _attribute(model, batch, targets, method, steps)
    explanation = Explanation(
        method=method,
        feature_names=_feature_names(run, flat.shape[1]),
        attributions=flat,
        targets=targets.cpu().numpy(),
        inputs=_raw(run, features.reshape(len(features), -1)),
        convergence_delta=delta,
        image_shape=_image_shape(run, flat.shape[1]),
    )
    if plot is not None:
        explanation.plot_bars(plot)
        if explanation.image_shape is not None:
            plot = Path(plot)
            explanation.plot_heatmap(plot.with_name(f"{plot.stem}_heatmap{plot.suffix or '.png'}"))
    return explanation


def _attribute(
    model: torch.nn.Module, batch: torch.Tensor, targets: torch.Tensor, method: str, steps: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(num_rows, num_features) attributions by `method`, and for integrated gradients the
    (num_rows,) convergence deltas (None for saliency)."""
    from captum.attr import IntegratedGradients, Saliency

    if method == "integrated_gradients":
        attributions, delta = IntegratedGradients(model).attribute(
            batch.clone().requires_grad_(True),
            baselines=torch.zeros_like(batch),
            target=targets,
            n_steps=steps,
            internal_batch_size=max(len(batch), 512),  # captum needs at least one row per chunk
            return_convergence_delta=True,
        )
        delta = delta.detach().cpu().numpy()
    else:
        attributions = Saliency(model).attribute(batch.clone().requires_grad_(True), target=targets)
        delta = None
    return attributions.detach().cpu().reshape(len(batch), -1).numpy(), delta


def _model_inputs(run, inputs, preprocessed: bool) -> np.ndarray:
    """The rows as the model takes them: float32, scaled as in training, sample shape checked."""
    if isinstance(inputs, str):
        if run.data is None:
            raise DataError(
                f"explain: '{inputs}' names a split, but this run has no data loaded; pass the "
                "rows themselves."
            )
        return run.data.split(inputs).features.detach().cpu().numpy().astype(np.float32)
    if run.preprocess.columns is not None and not preprocessed:
        # Raw table rows (text, blanks): filled and encoded as training did; attributions are
        # then per encoded feature (island=Biscoe, missing/sex, ...).
        if hasattr(inputs, "columns"):
            inputs = inputs[run.preprocess.input_columns].to_numpy(dtype=object)
        return run.preprocess.transform(inputs)
    array = np.asarray(
        inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else inputs, dtype=np.float32
    )
    expected = tuple(run.preprocess.extra.get("input_shape", array.shape[1:]))
    if array.ndim == len(expected):
        array = array.reshape(1, *array.shape)  # one row
    if tuple(array.shape[1:]) != expected:
        raise DataError(
            f"explain: inputs have shape {tuple(array.shape[1:])} per sample; the model was "
            f"trained on {expected}."
        )
    return array if preprocessed else run.preprocess.transform(array)


def _raw(run, features: np.ndarray) -> np.ndarray:
    """(num_rows, num_features) model inputs back in raw units, for showing them to a person."""
    if run.preprocess.mean is None:
        return features
    mean = np.asarray(run.preprocess.mean, dtype=np.float32)
    std = np.asarray(run.preprocess.std, dtype=np.float32)
    return features * std + mean


def _targets(run, target, outputs: torch.Tensor) -> torch.Tensor:
    """One output index per row: the given class, or each row's predicted class."""
    count = len(outputs)
    if run.task.name != "classification":
        index = 0 if target is None else int(target)
        return torch.full((count,), index, dtype=torch.long, device=outputs.device)
    if target is None:
        return outputs.argmax(dim=-1)
    classes = run.task.classes or [str(i) for i in range(run.task.num_outputs)]
    if str(target) in classes:
        index = classes.index(str(target))
    elif str(target).lstrip("-").isdigit() and 0 <= int(target) < len(classes):
        index = int(target)
    else:
        from torchloom.errors import did_you_mean

        raise TorchloomError(
            f"explain: unknown target class '{target}'.{did_you_mean(str(target), classes)} "
            f"Classes: {', '.join(classes)}."
        )
    return torch.full((count,), index, dtype=torch.long, device=outputs.device)


def _feature_names(run, count: int) -> list[str]:
    names = list(run.preprocess.feature_names)
    return names if len(names) == count else [f"x{i}" for i in range(count)]


def _image_shape(run, count: int) -> tuple[int, int] | None:
    """(height, width) for image inputs: from a 2-D/3-D sample shape with one channel, or from
    pixel_<row>_<column> feature names (scikit-learn's digits as a table)."""
    shape = tuple(run.preprocess.extra.get("input_shape", ()))
    squeezed = tuple(size for size in shape if size != 1)
    if len(shape) >= 2 and len(squeezed) == 2:
        return squeezed
    matches = [PIXEL_NAME.match(name) for name in run.preprocess.feature_names]
    found = [match for match in matches if match is not None]
    if found and len(found) == len(matches) == count:
        height = max(int(m.group(1)) for m in found) + 1
        width = max(int(m.group(2)) for m in found) + 1
        if height * width == count:
            return height, width
    return None
