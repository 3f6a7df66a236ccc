"""What each CLI command does, once its arguments are parsed (imports torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from torchloom import api
from torchloom.command_arguments import split_config_arguments
from torchloom.errors import DataError, TorchloomError, did_you_mean
from torchloom.rl.run import AgentRun, is_agent_run, load_agent_run
from torchloom.tracking_commands import runs, tune  # noqa: F401 dispatched by name

console = Console()


def train(args: argparse.Namespace) -> int:
    path, overrides = split_config_arguments(args.arguments)
    if args.resume:
        if path or overrides:
            raise TorchloomError(
                "--resume takes the run's own config; give no CONFIG or overrides with it."
            )
        run = api.resume(args.resume)
    else:
        run = api.fit_config(path, overrides)
    if isinstance(run, AgentRun):
        return agent_trained(run)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    if run.summary is not None and "test" in run.summary:  # measured as the run finished
        print_metrics(run.summary["test"], "test", run.task.name)
    elif run.data is not None and run.data.test is not None:
        print_metrics(run.evaluate("test"), "test", run.task.name)
    if run.dir is not None:
        console.print(f"run saved to [bold]{run.dir}[/bold]")
        console.print(f"  evaluate: torchloom evaluate {run.dir}")
        what = "TEXTS.txt (one a line, or - for stdin)" if run.preprocess.tokenizer else "INPUT.csv"
        if run.preprocess.audio is not None:
            what = "CLIP.wav (or a folder of clips)"
        if not run.task.uses_targets:
            what = "--samples 100 -o samples.csv"
        console.print(f"  predict:  torchloom predict {run.dir} {what}")
        if run.config.output.tensorboard:
            console.print(f"  curves:   tensorboard --logdir {run.dir.parent}")
    run.wait()  # the plots and report.html, drawn while the lines above printed
    return 0


def data(args: argparse.Namespace) -> int:
    """`torchloom data TOOL` (torchloom/data_commands.py)."""
    from torchloom.data_commands import data as data_tool

    return data_tool(args)


def agent_trained(run: AgentRun) -> int:
    evaluation = (run.summary or {}).get("evaluation")
    if evaluation:
        print_agent_evaluation(evaluation)
    if run.dir is not None:
        console.print(f"run saved to [bold]{run.dir}[/bold]")
        console.print(f"  evaluate: torchloom evaluate {run.dir} --episodes 100")
        console.print(f"  watch:    torchloom play {run.dir} --episodes 3 -o play.gif")
        if run.config.output.tensorboard:
            console.print(f"  curves:   tensorboard --logdir {run.dir.parent}")
    return 0


def print_agent_evaluation(evaluation: dict) -> None:
    console.print(
        f"return over {evaluation['episodes']} episodes: {evaluation['return_mean']:.2f} "
        f"+- {evaluation['return_std']:.2f} (min {evaluation['return_min']:g}, max "
        f"{evaluation['return_max']:g}); mean length {evaluation['length_mean']:.1f}",
        highlight=False,
    )


def play(args: argparse.Namespace) -> int:
    """`torchloom play RUN_DIR`: an agent's episodes as an animated GIF."""
    if not is_agent_run(args.run_dir):
        raise TorchloomError(
            f"{args.run_dir}: not an agent run (its config.yaml has no env section); play "
            "renders agents trained with torchloom train on an env config (docs/rl.md)."
        )
    if args.episodes < 1:
        raise TorchloomError(f"--episodes: expected 1 or more, got {args.episodes}.")
    output = Path(args.output)
    if output.suffix.lower() != ".gif":
        raise TorchloomError(f"-o {output}: play writes an animated GIF; name it *.gif.")
    played = load_agent_run(args.run_dir).play(output, args.episodes, args.seed)
    returns = ", ".join(f"{value:g}" for value in played["returns"])
    console.print(f"wrote {output} ({played['frames']} frames); returns: {returns}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    if is_agent_run(args.run_dir):
        metrics = load_agent_run(args.run_dir).evaluate(args.episodes, args.seed)
        if args.json:
            print(json.dumps(metrics))
        else:
            print_agent_evaluation(metrics)
        return 0
    run = api.load_run(args.run_dir)
    if run.data is None:
        raise TorchloomError(
            f"{args.run_dir} was trained on in-memory arrays, which the run directory does not "
            "hold; evaluate it from Python with run.evaluate(split)."
        )
    metrics = run.evaluate(args.split)
    if args.json:
        print(json.dumps(metrics))
    else:
        print_metrics(metrics, args.split, run.task.name)
    return 0


def predict(args: argparse.Namespace) -> int:
    run = api.load_run(args.run_dir, data=False)
    if args.samples is not None:
        return write_samples(run, args.samples, args.seed, args.output)
    if args.input is None:
        raise TorchloomError("predict: give INPUT (a .csv or .npy file), or --samples N.")
    if run.task.name == "forecast":
        return forecast(run, Path(args.input), args.steps, args.output)
    if args.steps is not None:
        raise TorchloomError(
            f"--steps: {args.run_dir} is a {run.task.name} run; --steps is for forecasting runs."
        )
    if run.preprocess.tokenizer is not None:  # a text run: raw text lines in
        texts = read_texts(args.input, run.preprocess.feature_names[0])
        frame = predictions_frame(run.predict(texts), run.preprocess.classes)
        frame.insert(0, "text", texts)
    elif run.preprocess.audio is not None and not args.input.endswith(".npy"):
        from torchloom.data.audio import clip_files

        files = clip_files(Path(args.input))  # an audio file, or a folder of clips
        frame = predictions_frame(run.predict(files), run.preprocess.classes)
        frame.insert(0, "file", [str(file) for file in files])
    else:
        raw = run.preprocess.columns is not None  # text columns or blanks, filled as in training
        features = read_inputs(Path(args.input), run.preprocess.input_columns, raw=raw)
        predictions = run.predict(features)
        frame = predictions_frame(predictions, run.preprocess.classes)
    if args.output:
        from torchloom.io import atomic_write_text

        atomic_write_text(args.output, frame.to_csv(index=False))
        console.print(f"{len(frame)} predictions written to {args.output}")
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def serve(args: argparse.Namespace) -> int:
    from torchloom.serving import serve as serve_run

    for name, value in (("--max-batch", args.max_batch), ("--max-body-mb", args.max_body_mb)):
        if value <= 0:
            raise TorchloomError(f"{name}: expected a number > 0, got {value}.")
    if args.batch_wait_ms < 0 or not 0 <= args.port <= 65535:
        raise TorchloomError("--batch-wait-ms must be >= 0 and --port within 0..65535.")
    return serve_run(
        args.run_dir,
        host=args.host,
        port=args.port,
        token=args.token,
        insecure=args.insecure,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_body_mb=args.max_body_mb,
        threads=args.threads,
    )


def forecast(run, path: Path, steps: int | None, output: str | None) -> int:
    """Print (or write) the next `steps` values after the history in `path`."""
    from torchloom.tasks.forecast import read_history

    column = run.preprocess.feature_names[0]
    history = read_history(path, column)
    steps = run.task.horizon if steps is None else steps
    values = run.task.roll_forward(run.model, history, steps)
    import pandas as pd

    frame = pd.DataFrame({"step": range(1, len(values) + 1), "prediction": values})
    if output:
        from torchloom.io import atomic_write_text

        atomic_write_text(output, frame.to_csv(index=False))
        console.print(f"{len(frame)} forecast values written to {output}")
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def write_samples(run, count: int, seed: int, output: str | None) -> int:
    """Write `count` generated samples as a CSV (one row each, one column per pixel or feature,
    in the data's units); with an output path, also a PNG grid of them beside it."""
    import pandas as pd

    samples = run.sample(count, seed)  # (count, *input_shape)
    flat = samples.reshape(count, -1)
    names = run.preprocess.feature_names
    columns = names if len(names) == flat.shape[1] else [f"x{i}" for i in range(flat.shape[1])]
    frame = pd.DataFrame(flat, columns=columns)
    if not output:
        frame.to_csv(sys.stdout, index=False)
        return 0
    import torch

    from torchloom.io import atomic_write_text
    from torchloom.tasks.generation import save_grid

    atomic_write_text(output, frame.to_csv(index=False))
    grid = save_grid(torch.from_numpy(samples), Path(output).with_suffix(".png"))
    console.print(f"{count} samples written to {output}" + (f" and {grid}" if grid else ""))
    return 0


def lr_find(args: argparse.Namespace) -> int:
    from torchloom.lr_finder import lr_find_config

    path, overrides = split_config_arguments(args.arguments)
    result = lr_find_config(
        path,
        overrides,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_steps=args.steps,
        plot=args.plot,
    )
    lowest = min(range(len(result.losses)), key=result.losses.__getitem__)
    console.print(
        f"swept {len(result.losses)} steps from {result.learning_rates[0]:.2g} to "
        f"{result.learning_rates[-1]:.3g}; lowest loss {result.losses[lowest]:.4f} at "
        f"lr {result.learning_rates[lowest]:.3g}"
    )
    console.print(f"suggested learning rate: [bold]{result.suggestion:.4g}[/bold]")
    console.print(f"plot: {result.plot}")
    command = " ".join(
        ["torchloom train", *([path] if path else []), f"optimizer.lr={result.suggestion:.4g}"]
    )
    console.print(f"train with it: {command}")
    return 0


def summary(args: argparse.Namespace) -> int:

    from torchloom import models

    path, overrides = split_config_arguments(args.arguments)
    config = api.resolve_config(path, overrides)
    data = api.load_data(config)
    from torchloom.assemble import with_audio_input

    model = with_audio_input(models.build(config.model.name, **config.model.options), data, config)
    example = data.train.sample(2).features[:2]
    models.materialize(model, example, data.num_outputs, data.preprocess.vocab_size)
    rows = models.summary(model, example)
    table = Table(title=f"{config.model.name} on {data.name}: input {(-1, *data.input_shape)}")
    for column in ("layer", "type", "output shape", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for row in rows:
        table.add_row(row["name"], row["type"], str(row["output_shape"]), f"{row['parameters']:,}")
    console.print(table)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    console.print(f"total parameters: {total:,} (trainable {trainable:,}), {size / 1024:.1f} KiB")
    return 0


def doctor(args: argparse.Namespace) -> int:
    from torchloom.diagnosis import doctor as diagnose

    if is_agent_run(args.run_dir):
        from torchloom.rl.doctor import diagnose_agent

        run = load_agent_run(args.run_dir)
        diagnosis = diagnose_agent(run.history, run.config, str(args.run_dir))
    else:
        diagnosis = diagnose(args.run_dir, quiet=True)
    if args.json:
        print(json.dumps(diagnosis.to_json(), indent=2))
    else:
        print(diagnosis)
    return 0


def explain(args: argparse.Namespace) -> int:
    from torchloom.explanations import explain as attribute
    from torchloom.explanations import refuse_text

    run = api.load_run(args.run_dir, data=False)
    refuse_text(run)
    raw = run.preprocess.columns is not None  # text columns or blanks, encoded as in training
    features = read_inputs(Path(args.input), run.preprocess.input_columns, raw=raw)
    explanation = attribute(
        run, features, method=args.method.replace("-", "_"), target=args.target, plot=args.plot
    )
    if args.json:
        print(json.dumps(explanation.to_json(top=args.top), indent=2))
        return 0
    table = Table(title=f"{explanation.method} over {len(features)} input row(s)")
    for column in ("rank", "feature", "mean |attribution|", "mean attribution"):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for rank, row in enumerate(explanation.ranking()[: args.top], start=1):
        table.add_row(str(rank), row["feature"], f"{row['importance']:.4g}", f"{row['mean']:.4g}")
    console.print(table)
    for path in explanation.plots:
        console.print(f"plot: {path}")
    return 0


def export(args: argparse.Namespace) -> int:
    from torchloom.export import export as write_export

    path = write_export(args.run_dir, args.format, args.output)
    console.print(f"{args.format} model written to [bold]{path}[/bold] (takes raw inputs)")
    return 0


def print_metrics(metrics: dict[str, float], split: str, task: str) -> None:
    """A table of headline metrics, and for classification a per-class precision/recall table
    (for forecasts: the model beside its naive baselines)."""
    if task == "forecast":
        print_forecast_metrics(metrics, split)
        return
    headline = Table(title=f"{split} metrics")
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    for key, value in metrics.items():
        if "/" not in key:
            headline.add_row(key, f"{value:.4f}")
    console.print(headline)
    classes = [key.split("/", 1)[1] for key in metrics if key.startswith("precision/")]
    if task == "classification" and classes:
        per_class = Table(title=f"{split} metrics per class")
        for column in ("class", "precision", "recall"):
            per_class.add_column(column, justify="left" if column == "class" else "right")
        for name in classes:
            per_class.add_row(
                name, f"{metrics[f'precision/{name}']:.4f}", f"{metrics[f'recall/{name}']:.4f}"
            )
        console.print(per_class)


def print_forecast_metrics(metrics: dict[str, float], split: str) -> None:
    """MAE, RMSE and MAPE of the model, the naive and the seasonal-naive forecast, side by side."""
    columns = [("model", ""), ("naive", "naive_")]
    if "seasonal_naive_mae" in metrics:
        columns.append(("seasonal naive", "seasonal_naive_"))
    table = Table(title=f"{split} forecast metrics (in the series' units)")
    table.add_column("metric")
    for label, _ in columns:
        table.add_column(label, justify="right")
    for measure in ("mae", "rmse", "mape"):
        table.add_row(measure, *(f"{metrics[prefix + measure]:.4f}" for _, prefix in columns))
    console.print(table)
    if "loss" in metrics:
        console.print(f"loss (scaled units): {metrics['loss']:.4f}")


def read_inputs(path: Path, feature_names: list[str], raw: bool = False) -> np.ndarray:
    """Features from a .npy array or a CSV (columns matched by name, or all columns in order).

    With `raw`, CSV columns may hold text and blanks: an object array for `Run.predict` to fill
    and encode as training did."""
    if path.is_dir():
        raise DataError(f"{path} is a folder; give an input file (a .csv or .npy).")
    if not path.is_file():
        raise DataError(f"no such input file '{path}'. Give a .csv or .npy file of features.")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError, EOFError) as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            if "pickle" in reason:  # numpy's advice (load it unsafely) is not one to pass on
                reason = "not a .npy array, or one of Python objects, which are never unpickled"
            raise DataError(
                f"{path}: not a numeric .npy array ({reason}). Save one with "
                "numpy.save(path, features.astype('float32'))."
            ) from None
        if array.ndim == 0 or len(array) == 0:
            raise DataError(
                f"{path}: holds no samples to predict (shape {array.shape}). Save an array of "
                "shape (samples, ...) with one row per sample."
            )
        return array
    if path.suffix != ".csv":
        raise DataError(
            f"{path}: expected a .csv or .npy file of features, got '{path.suffix}'. Save the "
            "inputs as a CSV with the run's feature columns, or as a .npy array."
        )
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise DataError(
            f"{path}: cannot be read as CSV ({first_line}). Give a comma-separated file with a "
            f"header row naming the {len(feature_names)} feature columns."
        ) from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows to predict. Add one row per sample.")
    if set(feature_names) <= set(map(str, frame.columns)):
        frame = frame[feature_names]  # extra columns (a label, an id) are ignored
    elif frame.shape[1] != len(feature_names):
        missing = next(n for n in feature_names if n not in map(str, frame.columns))
        raise DataError(
            f"{path}: has no column '{missing}'.{did_you_mean(missing, map(str, frame.columns))}"
            f" The model needs {len(feature_names)} feature columns: "
            f"{', '.join(feature_names[:8])}{', ...' if len(feature_names) > 8 else ''}."
        )
    if raw:
        return frame.to_numpy(dtype=object)
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        column = frame[non_numeric[0]]
        numbers = pd.to_numeric(column, errors="coerce")
        rows = np.flatnonzero(numbers.isna() & column.notna())
        where = f" (data row {rows[0] + 1} holds {column.iloc[rows[0]]!r})" if len(rows) else ""
        raise DataError(
            f"{path}: column '{non_numeric[0]}' is not numeric{where}. This run was trained on "
            "numbers; give numbers there."
        )
    return frame.to_numpy(dtype=np.float32)


def read_texts(source: str, column: str) -> list[str]:
    """Raw texts for a text run: one a line of a text file, or of stdin when `source` is "-";
    from a .csv file, its column `column` (the run's text column). Blank lines are skipped.

    Raises:
        DataError: a missing file or column, or no text at all.
    """
    try:
        lines = _text_lines(source, column)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{source}: not UTF-8 text ({error.reason} at byte {error.start}). Save the texts "
            "as UTF-8, one a line."
        ) from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{source}: no text to predict; give one text a line.")
    return texts


def _text_lines(source: str, column: str) -> list[str]:
    """`read_texts`'s lines, blank ones included."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"no such input file '{path}'. Give a text file, one text a line.")
        if path.suffix == ".csv":
            import pandas as pd

            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
                first_line = (str(error).splitlines() or [type(error).__name__])[0]
                raise DataError(
                    f"{path}: cannot be read as CSV ({first_line}). Give a CSV with a header "
                    f"row and the text column '{column}', or a plain text file."
                ) from None
            if column not in frame.columns:
                columns = list(map(str, frame.columns))
                raise DataError(
                    f"{path}: no text column '{column}'.{did_you_mean(column, columns)} "
                    f"Columns: {', '.join(columns)}. Name the text column '{column}', or give a "
                    "plain text file with one text a line."
                )
            lines = frame[column].tolist()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    return lines


def predictions_frame(predictions: dict[str, np.ndarray], classes: list[str] | None):
    """A table of predictions: the class name and one probability column per class, or values.

    Floats are written in full (shortest round-trip form) so a reader gets the exact values.
    """
    import pandas as pd

    if "labels" in predictions:  # multilabel: 0/1 and a probability per label
        names = classes or [str(i) for i in range(predictions["labels"].shape[1])]
        columns = {f"label/{name}": predictions["labels"][:, i] for i, name in enumerate(names)}
        for index, name in enumerate(names):
            columns[f"probability/{name}"] = predictions["probabilities"][:, index].astype(float)
        return pd.DataFrame(columns)
    if "score" in predictions:  # anomaly: the reconstruction error and the flag
        return pd.DataFrame(
            {"score": predictions["score"].astype(float), "anomaly": predictions["anomaly"]}
        )
    if "class" in predictions:
        names = classes or [str(i) for i in range(predictions["probabilities"].shape[1])]
        frame = pd.DataFrame({"prediction": [names[i] for i in predictions["class"]]})
        for index, name in enumerate(names):
            frame[f"probability/{name}"] = predictions["probabilities"][:, index].astype(float)
        return frame
    values = predictions["value"].reshape(len(predictions["value"]), -1).astype(float)
    if values.shape[1] == 1:
        return pd.DataFrame({"prediction": values[:, 0]})
    return pd.DataFrame({f"prediction/{i}": values[:, i] for i in range(values.shape[1])})
