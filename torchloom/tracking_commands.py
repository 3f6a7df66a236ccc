"""The `torchloom runs` and `torchloom tune` commands, once their arguments are parsed."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from torchloom.command_arguments import split_config_arguments
from torchloom.errors import TorchloomError

console = Console()


def number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def runs(args: argparse.Namespace) -> int:
    """List the runs under ROOT, or compare two with --compare A B."""
    from torchloom.runs_table import compare_runs, list_runs

    if args.compare:
        comparison = compare_runs(*args.compare)
        if args.json:
            rows = comparison.pop("rows")
            comparison["status"] = [row["status"] for row in rows]
            print(json.dumps(comparison, indent=2, default=str))
            return 0
        first, second = comparison["runs"]
        for title, values in (
            ("config differences", comparison["config"]),
            ("final metrics", comparison["metrics"]),
        ):
            table = Table(title=title)
            table.add_column("field" if title.startswith("config") else "metric")
            table.add_column(first, justify="right")
            table.add_column(second, justify="right")
            for key, (a, b) in values.items():
                if key.count("/") <= 1:  # per-class metrics would drown the table
                    table.add_row(key, number(a), number(b))
            if not values:
                table.add_row("(none)", "", "")
            console.print(table)
        return 0
    rows = list_runs(args.root)
    if args.json:
        for row in rows:
            row.pop("config")
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        console.print(f"no runs under {args.root}")
        return 0
    table = Table(title=f"runs in {args.root}")
    for column in ("name", "task", "model", "data", "epochs", "best", "seconds", "status"):
        # Names (copied into other commands) and statuses stay whole; other columns shrink.
        whole: dict = {}  # add_column's keywords, each of its own type
        if column == "name":
            whole = {"no_wrap": True, "min_width": max(len(row["name"]) for row in rows)}
        elif column == "status":
            whole = {"no_wrap": True, "min_width": max(len(row["status"]) for row in rows)}
        table.add_column(
            column, justify="right" if column in ("epochs", "seconds") else "left", **whole
        )
    for row in rows:
        best = f"{row['monitor']} {number(row['best'])}" if row["best"] is not None else "-"
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else "-"
        table.add_row(
            row["name"],
            row["task"] or "-",
            row["model"] or "-",
            str(row["data"] or "-"),
            str(row["epochs"]),
            best,
            seconds,
            row["status"],
        )
    console.print(table)
    for row in rows:
        if "error" in row:  # a damaged run: what is wrong with it, one line each
            print(f"{row['name']}: damaged: {row['error']}", file=sys.stderr)
    return 0


def tune(args: argparse.Namespace) -> int:
    """Run (or continue) a search; print the trials and where the best config is."""
    from torchloom.tune import tune_config

    path, overrides = split_config_arguments(args.arguments)
    if path is None:
        raise TorchloomError("tune needs a CONFIG with a search: section as its first argument.")
    if args.trials < 1:
        raise TorchloomError(f"--trials: expected a positive number of trials, got {args.trials}.")
    result = tune_config(path, overrides, trials=args.trials, study=args.study, output=args.output)
    table = Table(title=f"{len(result.study.trials)} trials ({result.direction} {result.monitor})")
    paths = list(result.best_params)
    for column in ("trial", "state", result.monitor, *paths):
        table.add_column(column, justify="right")
    for trial in result.study.trials:
        params = [number(trial.params.get(key)) for key in paths]
        state = trial.state.name.lower()
        if state == "fail" and "error" not in trial.user_attrs:
            state = "interrupted"  # Ctrl-C or a killed process: the next run redoes it
        elif state == "fail":
            state = "diverged"
        table.add_row(str(trial.number), state, number(trial.value), *params)
    console.print(table)
    console.print(f"best: {result.monitor} {result.best_value:.4g} with {result.best_params}")
    console.print(f"study: {result.storage} (run the same command again to continue it)")
    console.print(f"best config: [bold]{result.best_config}[/bold]")
    console.print(f"  train it: torchloom train {result.best_config}")
    return 0
