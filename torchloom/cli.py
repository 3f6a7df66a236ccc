"""The command line: `torchloom train|evaluate|predict|summary|lr-find|doctor|explain|data`.

Parsing imports nothing heavy, so `torchloom --help` answers without importing torch. A user
mistake prints one message to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

# Re-exported: callers imported it from here before it moved below the handlers.
from torchloom.command_arguments import split_config_arguments  # noqa: F401

EXIT_USER_ERROR = 2

EXAMPLES = """examples:
  torchloom train                                  the tutorial MLP on the embedded digits
  torchloom train examples/digits_mlp.yaml trainer.epochs=50 optimizer.lr=0.05
  torchloom evaluate runs/mlp-digits-20261127-101500 --json
  torchloom predict runs/mlp-digits-20261127-101500 new_samples.csv -o predictions.csv
  echo "a gorgeous, moving film" | torchloom predict runs/text_bag-rotten_tomatoes-20261127-1015 -
  torchloom summary examples/wine_layers.yaml
  torchloom lr-find examples/digits_mlp.yaml --plot lr.png
  torchloom doctor runs/mlp-digits-20261127-101500 --json
  torchloom explain runs/mlp-digits-20261127-101500 new_samples.csv --plot attributions.png
  torchloom export runs/mlp-digits-20261127-101500 --format onnx
  torchloom runs --compare runs/mlp-digits-a runs/mlp-digits-b
  torchloom tune examples/digits_tune.yaml --trials 20
  torchloom data pack examples/fashion_mnist_lenet.yaml shards/fashion_mnist
"""


def build_parser() -> argparse.ArgumentParser:
    from torchloom import __version__

    parser = argparse.ArgumentParser(
        prog="torchloom",
        description="Build, train, evaluate and diagnose PyTorch networks from one YAML file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"torchloom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order of these calls is the order `torchloom --help` lists the commands in.
    add_train_commands(commands)
    add_predict_command(commands)
    add_serve_command(commands)
    add_config_commands(commands)
    add_inspection_commands(commands)
    add_tracking_commands(commands)
    add_data_commands(commands)
    return parser


def add_train_commands(commands) -> None:
    """`torchloom train` and `torchloom evaluate`."""
    train = commands.add_parser(
        "train",
        help="train from a config (none: the built-in default) with key=value overrides",
        description="Train a model. CONFIG is a YAML file; each key.sub=value overrides a field.",
    )
    train.add_argument("arguments", nargs="*", metavar="[CONFIG] [key=value ...]")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its newest complete checkpoint (no CONFIG needed)",
    )

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a trained run on a split (an agent: its return)"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument(
        "--episodes", type=int, default=100, help="an agent run: seeded episodes to play"
    )
    evaluate.add_argument(
        "--seed", type=int, default=10_000, help="an agent run: episode k resets with SEED+k"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    play = commands.add_parser(
        "play",
        help="watch a trained agent play: an animated GIF of seeded episodes",
        description="Render greedy episodes of an agent run (docs/rl.md) into an animated GIF.",
    )
    play.add_argument("run_dir", metavar="RUN_DIR")
    play.add_argument("--episodes", type=int, default=1, help="episodes to render")
    play.add_argument("--seed", type=int, default=10_000, help="episode k resets with SEED+k")
    play.add_argument("-o", "--output", default="play.gif", help="the GIF to write")


def add_predict_command(commands) -> None:
    """`torchloom predict`: classes, values, forecasts or generated samples."""
    predict = commands.add_parser(
        "predict",
        help="predictions for new inputs (.csv or .npy; text runs: raw text, one a line; audio "
        "runs: clips)",
        description="INPUT is a .csv or .npy file of features. For a text run it is a text file "
        "with one raw text a line, '-' to read them from stdin, or a .csv with the run's text "
        "column; blank lines are skipped and the output repeats each text. For an audio run it "
        "is a .wav, .flac or .ogg clip, a folder of them (the output names each file), or a .npy "
        "array of waveforms at the run's sample rate.",
    )
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("input", metavar="INPUT", nargs="?")
    predict.add_argument("-o", "--output", help="write a CSV here (default: print to stdout)")
    predict.add_argument(
        "--steps",
        type=int,
        help="forecasting runs: how many next values to forecast from the history in INPUT "
        "(a .csv, or a text file of numbers); default the run's horizon",
    )
    predict.add_argument(
        "--samples",
        type=int,
        help="generative runs (vae, gan): write N new samples instead of reading INPUT, as a CSV "
        "of pixel values in the data's units (with -o, also a PNG grid beside it)",
    )
    predict.add_argument("--seed", type=int, default=0, help="seeds --samples (default 0)")


def add_serve_command(commands) -> None:
    """`torchloom serve`: one run's model over HTTP, with a page to try it."""
    serve = commands.add_parser(
        "serve",
        help="serve a run's model over HTTP: POST /predict, a page to try it at /",
        description='Serve RUN_DIR\'s model: POST /predict takes {"inputs": [...]} (each what '
        "one row or line of torchloom predict takes) and answers torchloom predict's rows; "
        "GET /health, /ready, /metadata, /openapi.json; a page to try the model at /. Binds to "
        "127.0.0.1 unless told otherwise; another address needs --token (or --insecure). "
        "Needs the serve extra: pip install 'torchloom[serve]'.",
    )
    serve.add_argument("run_dir", metavar="RUN_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    serve.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health (default: "
        "the TORCHLOOM_SERVE_TOKEN environment variable, else none)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding beyond loopback without a token",
    )
    serve.add_argument(
        "--max-batch", type=int, default=64, help="most rows one forward pass takes (default 64)"
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="how long a pass waits for more requests to join it (default 0: it takes what "
        "queued while the previous pass ran)",
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=10.0, help="largest request body (default 10 MB)"
    )
    serve.add_argument("--threads", type=int, help="torch threads for the model (default: all)")


def add_config_commands(commands) -> None:
    """`torchloom lr-find` and `torchloom summary`: a config's model, before any training."""
    finder = commands.add_parser(
        "lr-find",
        help="learning-rate range test: plot loss against rate and suggest one",
        description="Sweep the learning rate exponentially with the config's model, loss and "
        "optimizer; the model is not trained by it.",
    )
    finder.add_argument("arguments", nargs="*", metavar="[CONFIG] [key=value ...]")
    finder.add_argument("--plot", default="lr_find.png", help="PNG to write (default: %(default)s)")
    finder.add_argument("--start-lr", type=float, default=1e-6)
    finder.add_argument("--end-lr", type=float, default=10.0)
    finder.add_argument("--steps", type=int, default=200)

    summary = commands.add_parser("summary", help="layers, output shapes and parameter counts")
    summary.add_argument("arguments", nargs="*", metavar="[CONFIG] [key=value ...]")


def add_inspection_commands(commands) -> None:
    """`torchloom doctor`, `torchloom explain` and `torchloom export`: a finished run."""
    doctor = commands.add_parser(
        "doctor",
        help="verdicts on what went wrong in a run, with evidence and advice",
        description="Read what a run recorded (metrics.jsonl, diagnostics.json, config.yaml) "
        "and print each problem found, its evidence and what to try. See docs/doctor.md.",
    )
    doctor.add_argument("run_dir", metavar="RUN_DIR")
    doctor.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    explain = commands.add_parser(
        "explain",
        help="which input features drove a run's predictions (integrated gradients, saliency)",
        description="Attribute each prediction to the input features (needs captum: "
        "pip install 'torchloom[explain]'). INPUT is a .csv or .npy file as for predict.",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("input", metavar="INPUT")
    explain.add_argument(
        "--method", default="integrated-gradients", choices=["integrated-gradients", "saliency"]
    )
    explain.add_argument("--target", help="class to explain (default: each row's prediction)")
    explain.add_argument("--top", type=int, default=10, help="features to list (default: 10)")
    explain.add_argument("--plot", help="write a bar chart (and an image heatmap) to this PNG")
    explain.add_argument("--json", action="store_true", help="print the ranking as JSON")

    export = commands.add_parser(
        "export",
        help="write a run's model, preprocessing included, as ONNX, TorchScript or torch.export",
        description="Export RUN_DIR's network with its input standardization folded in (it "
        "takes raw inputs) and a dynamic batch dimension. ONNX needs: pip install "
        "'torchloom[onnx]'. See docs/export.md.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument(
        "--format", required=True, choices=["onnx", "torchscript", "exported-program"]
    )
    export.add_argument("-o", "--output", help="file to write (default: inside RUN_DIR)")


def add_data_commands(commands) -> None:
    """`torchloom data pack` (handler in torchloom/data_commands.py)."""
    data = commands.add_parser(
        "data",
        help="data tools: pack a config's data into shards for data larger than memory",
        description="Data tools. See docs/shards.md.",
    )
    tools = data.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    pack = tools.add_parser(
        "pack",
        help="write the config's data as litdata shards in OUT_DIR (train, val, test)",
        description="Load the data section of CONFIG (split, preprocessed) and write it as "
        "litdata shards in OUT_DIR, a batch at a time; train from them with data: {name: "
        "shards, path: OUT_DIR}. Needs: pip install 'torchloom[shards]' && pip install "
        "--no-deps litdata==0.2.76.",
    )
    pack.add_argument("arguments", nargs="+", metavar="CONFIG OUT_DIR [key=value ...]")
    pack.add_argument(
        "--chunk-bytes",
        default="64MB",
        help="size of each chunk file (default: %(default)s); a reader keeps a few mapped",
    )


def add_tracking_commands(commands) -> None:
    """`torchloom runs` and `torchloom tune` (handlers in torchloom/tracking_commands.py)."""
    runs = commands.add_parser(
        "runs",
        help="list the runs under a folder (name, task, model, best metric, time, status)",
        description="List the run directories under ROOT, or compare two runs side by side.",
    )
    runs.add_argument("root", nargs="?", default="runs", metavar="ROOT", help="default: runs")
    runs.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="two run directories: config and metrics"
    )
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    tune = commands.add_parser(
        "tune",
        help="search the config's search: space with Optuna (pip install 'torchloom[tune]')",
        description="Train trials with values drawn from the config's search: section, prune "
        "bad ones, keep the study in sqlite (run again to continue it) and write the best "
        "config for torchloom train. See docs/tracking.md.",
    )
    tune.add_argument("arguments", nargs="+", metavar="CONFIG [key=value ...]")
    tune.add_argument("--trials", type=int, default=20, help="trials the study should hold")
    tune.add_argument("--study", help="sqlite file (default: <output.dir>/tune-<name>/study.db)")
    tune.add_argument("-o", "--output", help="best config YAML (default: best.yaml by the study)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from torchloom import commands
    from torchloom.errors import TorchloomError

    handler = getattr(commands, args.command.replace("-", "_"))
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        # Under torchrun: an uncaught error goes where the launcher's failure summary shows it.
        from torch.distributed.elastic.multiprocessing.errors import record

        handler = record(handler)
    try:
        return handler(args) or 0
    except TorchloomError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        if error.filename is None:
            raise
        # A path given on the command line that the system refuses (too long, not readable).
        print(f"error: {error.filename}: {error.strerror or error}.", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signal", 2)  # 130 for SIGINT, 143 for SIGTERM


if __name__ == "__main__":
    sys.exit(main())
