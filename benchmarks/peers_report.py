"""Turn `peers.py` results into the markdown section of docs/benchmarks.md and its PNG plots."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path

import peers
from docs_sections import replace_section

DOCS_PATH = peers.ROOT / "docs" / "benchmarks.md"
PLOT_DIR = peers.ROOT / "docs" / "images"
MAIN_NAMES = {contender.name for contender in peers.CONTENDERS}  # not the option variants
PEER_NAMES = ("tutorial w0", "tutorial w2", "lightning", "lightning quiet", "keras", "skorch")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_lines(args, seconds: float) -> list[str]:
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("torch", "torchloom", "lightning", "keras", "skorch", "numpy")
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return [
        f"Python {platform.python_version()}; {versions}",
        f"CPU: {_cpu_model()}; os.cpu_count() {os.cpu_count()}, usable {affinity}",
        f"threads: torch.set_num_threads({args.threads}) in every contender unless its row says "
        "otherwise; DataLoader workers run 1 thread each",
        "load average (1, 5, 15 min) at the end: "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
        f"rounds {args.rounds} x repeats {args.repeats} per contender"
        + (
            ""
            if args.quick
            else " ("
            + ", ".join(
                f"{name}: {args.rounds * w.rounds_factor} rounds"
                for name, w in peers.common.WORKLOADS.items()
                if w.rounds_factor > 1
            )
            + ")"
        )
        + ", after a warm-up epoch and before an untimed last epoch; "
        f"{'--quick (small slices of the data)' if args.quick else 'full data'}; "
        f"the whole run took {seconds / 60:.1f} min",
    ]


def _spread(outcome: peers.Outcome) -> str:
    rates = outcome.samples_per_second()
    return f"{min(rates):,.0f}-{max(rates):,.0f}"


def workload_table(outcomes: list[peers.Outcome]) -> list[str]:
    lean = next((o for o in outcomes if o.contender.name == "lean" and o.results), None)
    lines = [
        "| contender | what | samples/s (median) | ratio to lean | min-max "
        "| peak RSS MB, training | peak RSS MB, process "
        "| fit call to 1st step, s | last epoch to return, s | import, s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for outcome in outcomes:
        name, note = outcome.contender.name, outcome.contender.note
        if not outcome.results:
            lines.append(f"| {name} | {note} | failed: {outcome.error} | | | | | | | |")
            continue
        ratio = f"{outcome.median() / lean.median():.2f}" if lean else "-"
        lines.append(
            f"| {name} | {note} | {outcome.median():,.0f} | {ratio} | {_spread(outcome)} "
            f"| {_training_peak(outcome)} | {outcome.field_median('peak_rss_mb'):.0f} "
            f"| {outcome.field_median('first_step_seconds'):.2f} | {_finish(outcome)} "
            f"| {outcome.field_median('import_seconds'):.2f} |"
        )
    return lines


def _finish(outcome: peers.Outcome) -> str:
    """Seconds from the last epoch end to the fit call's return (older results have none)."""
    if any("finish_seconds" not in result for result in outcome.results):
        return "-"
    return f"{outcome.field_median('finish_seconds'):.2f}"


def _training_peak(outcome: peers.Outcome) -> str:
    """The peak RSS at the last epoch end (results from before this column have none)."""
    if any("training_peak_rss_mb" not in result for result in outcome.results):
        return "-"
    return f"{outcome.field_median('training_peak_rss_mb'):.0f}"


def versus_table(results: dict[str, list[peers.Outcome]]) -> list[str]:
    """torchloom's median samples/s over each peer's, per workload (> 1: torchloom is faster)."""
    lines = [
        "| workload | " + " | ".join(PEER_NAMES) + " | fastest contender |",
        "|---|" + "---:|" * len(PEER_NAMES) + "---|",
    ]
    for workload, outcomes in results.items():
        by_name = {o.contender.name: o for o in outcomes if o.results}
        if "torchloom" not in by_name:
            continue
        ours = by_name["torchloom"].median()
        cells = [f"{ours / by_name[p].median():.2f}x" if p in by_name else "-" for p in PEER_NAMES]
        fastest = max(
            (o for o in by_name.values() if o.contender.name in MAIN_NAMES),
            key=lambda o: o.median(),
        )
        lines.append(f"| {workload} | " + " | ".join(cells) + f" | {fastest.contender.name} |")
    return lines


def reading_lines(options_ran: bool = True) -> list[str]:
    """How to read the tables, and why torchloom can trail the fastest row (written by hand);
    the paragraph on the faster-than-eager rows only when this run measured them."""
    lines = [
        "How to read them, and where torchloom is not the fastest row:",
        "",
        "- `torchloom` is `fit` as a user gets it: a progress line, metrics.jsonl and "
        "TensorBoard events every epoch, checkpoints, and the report at the end (outside the "
        "timed repeats). On the digits workload an epoch is only 15 steps (a few ms), so these "
        "per-epoch writes weigh most there; `torchloom quiet` (`progress=False, "
        "output_dir=None`) is the loop alone. Overhead per step is what the issue's targets "
        "are about; `benchmarks/overhead.py` above measures it in one process, interleaved.",
        "- `lean compile`, `torchloom compile` (`fit(compile=True)`), `lean foreach` and "
        "`lean 2 threads` are the faster-than-eager candidates: where one beats `lean`, the "
        "same setting is the one to use (`compile=True` is a `fit` option and `trainer.compile` "
        "in a config; threads are `torch.set_num_threads`). On a loaded shared machine a second "
        "thread often makes single runs several times slower: a worker thread waits on a "
        "descheduled sibling."
        if options_ran
        else "- The faster-than-eager candidates (`lean compile`, `torchloom compile`, `lean "
        "foreach`, `lean 2 threads`) were not measured in this run (`--no-options` or "
        "`--quick`).",
        "- Keras builds its own layers with its own initializers and optimizer, so its weights "
        "differ; Lightning, skorch and the tutorial loop shuffle through a DataLoader, so their "
        "batches differ from the lean loop's. The lean loop and torchloom draw the same batches "
        "and end with the same weights (checked each run: see the script's output).",
        "- `tutorial w2` starts two worker processes every epoch (the tutorial's DataLoader has "
        "no `persistent_workers`), which dominates short epochs.",
    ]
    return lines


def startup_lines(studies: dict) -> list[str]:
    times = studies["startup"]
    lines = ["| command | median wall s (5 runs) |", "|---|---:|"]
    lines += [f"| `{label}` | {seconds:.3f} |" for label, seconds in times.items()]
    over = times["import torchloom.api (what fit needs)"] - times["import torch"]
    lines += [
        "",
        f"`import torchloom.api` adds {over:.3f} s over `import torch`; plain "
        f"`import torchloom` is lazy and imports no torch.",
    ]
    return lines


def memory_lines(studies: dict) -> list[str]:
    lines = ["| after importing (in turn) | peak RSS MB | added MB |", "|---|---:|---:|"]
    previous = 0.0
    for module, megabytes in studies["memory_by_import"].items():
        lines.append(f"| `{module}` | {megabytes:.0f} | {megabytes - previous:+.0f} |")
        previous = megabytes
    return lines


def first_optimizer_lines(studies: dict) -> list[str]:
    plain, overlap = studies["first_optimizer"]["plain"], studies["first_optimizer"]["overlap"]
    lines = [
        "| | import torch | load data | first `SGD(...)` | second | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in (("sequential", plain), ("`torch._dynamo` imported in a thread", overlap)):
        lines.append(
            f"| {label} | {row['import_torch']:.2f} | {row['load_data']:.2f} "
            f"| {row['first_optimizer']:.3f} | {row['second_optimizer']:.5f} | {row['total']:.2f} |"
        )
    return lines


def overlap_verdict(studies: dict) -> str:
    """What importing torch._dynamo in a background thread did to the total, in words."""
    plain, overlap = studies["first_optimizer"]["plain"], studies["first_optimizer"]["overlap"]
    # What loading plus the first optimizer took, sequential vs overlapped (the import of torch
    # itself is left out: it varies between processes by more than the effect measured).
    saved = (plain["load_data"] + plain["first_optimizer"]) - (
        overlap["load_data"] + overlap["first_optimizer"]
    )
    if saved > 0.1 * plain["first_optimizer"]:
        return (
            f"Importing it in a background thread while data loads saved {saved:.2f} s of "
            f"{plain['first_optimizer']:.2f} s here (loading plus the first optimizer). That "
            "needs a free core and a loader that releases the GIL; under heavy load the same "
            "script saved nothing:"
        )
    return (
        f"Importing it in a background thread while data loads saved nothing here "
        f"({saved:+.2f} s of {plain['first_optimizer']:.2f} s): the import is Python bytecode "
        "under the GIL, so it slows the loading by about as much as it saves:"
    )


def accuracy_lines(studies: dict) -> list[str]:
    lines = [
        "| workload | target test accuracy | recipe | contender | epochs | s from fit call "
        "| s from process start |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    recipes = {"sgd": "SGD lr 0.01 momentum 0.9", "adam": "Adam lr 0.001"}
    for row in studies["time_to_accuracy"]:
        recipe = recipes[row.get("optimizer", "sgd")]
        head = f"| {row['workload']} | {row['target']} | {recipe} | {row['contender']} "
        if "error" in row:
            lines.append(head + f"| failed: {row['error']} | | |")
        elif row["epochs"] is None:
            lines.append(head + f"| not in {row['max_epochs']} (last: {row['accuracy']:.4f}) | | |")
        else:
            lines.append(
                head + f"| {row['epochs']} | {row['seconds_from_fit']:.2f} "
                f"| {row['seconds_from_start']:.2f} |"
            )
    return lines


def scaling_lines(studies: dict) -> list[str]:
    lines = [
        "| study | size | contender | samples/s | peak RSS MB | RSS after import MB | data MB "
        "| peak - import - data MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for study, label in (("rows", "rows x 64"), ("width", "hidden width")):
        for row in studies["scaling"][study]:
            extra = row["peak_rss_mb"] - row["rss_after_import_mb"] - row["data_mb"]
            lines.append(
                f"| {label} | {row['x']:,} | {row['contender']} "
                f"| {statistics.median(row['samples_per_second']):,.0f} | {row['peak_rss_mb']:.0f} "
                f"| {row['rss_after_import_mb']:.0f} | {row['data_mb']:.0f} | {extra:.0f} |"
            )
    return lines


def plot_scaling(studies: dict) -> list[str]:
    """Two PNGs (rows, width), each throughput and peak RSS against size; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    PLOT_DIR.mkdir(parents=True, exist_ok=True)
    names = []
    for study, label in (("rows", "training rows (x 64 features)"), ("width", "hidden width")):
        figure, (speed_axis, memory_axis) = pyplot.subplots(1, 2, figsize=(10, 4))
        for contender in ("lean", "torchloom"):
            rows = [r for r in studies["scaling"][study] if r["contender"] == contender]
            sizes = [r["x"] for r in rows]
            speed_axis.plot(
                sizes,
                [statistics.median(r["samples_per_second"]) for r in rows],
                marker="o",
                label=contender,
            )
            memory_axis.plot(sizes, [r["peak_rss_mb"] for r in rows], marker="o", label=contender)
        if study == "rows":
            data_sizes = sorted({r["x"] for r in studies["scaling"][study]})
            memory_axis.plot(
                data_sizes,
                [x * (64 * 4 + 8) / 2**20 for x in data_sizes],
                linestyle="--",
                color="gray",
                label="the data itself",
            )
        for axis, ylabel in ((speed_axis, "samples/s"), (memory_axis, "peak RSS, MB")):
            axis.set_xscale("log")
            axis.set_xlabel(label)
            axis.set_ylabel(ylabel)
            axis.grid(True, alpha=0.3)
            axis.legend()
        figure.suptitle(f"MLP: lean loop vs torchloom.fit as the {study} grow")
        figure.tight_layout()
        name = f"peers_scaling_{study}.png"
        figure.savefig(PLOT_DIR / name, dpi=90)
        pyplot.close(figure)
        names.append(name)
    return names


def render(results: dict, studies: dict, args, seconds: float, missing: list[str]) -> str:
    command = "python benchmarks/peers.py" + (" --quick" if args.quick else "")
    parts = [
        "## Side by side with the peers (`benchmarks/peers.py`)",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}. "
        + (
            "**Figures from a quick run on small slices of the data while other jobs loaded "
            "the machine (see the load average below): they show that the suite runs, not how "
            "fast anything is. Rerun `make bench` on a quiet machine for the real figures.**"
            if args.quick
            else "Rerun `make bench` to refresh this section."
        ),
        "",
        *(f"- {line}" for line in machine_lines(args, seconds)),
        *(f"- skipped (not installed): {name}; `{peers.PEERS_EXTRA}`" for name in missing),
        "",
        "Every contender trains the same model on the same data, batch 100, the same number of "
        "optimizer steps, seed 0, each in its own process: one warm-up epoch, then timed "
        "repeats, each the wall time between two epoch ends (so per-step and per-epoch costs "
        "such as progress bars, loggers and checkpoints are in), then one untimed last epoch. "
        "What a framework does once per call is in its own columns: set-up in 'fit call to 1st "
        "step', and what it does after training (a final checkpoint, a report) in 'last epoch "
        "to return'. Ratios are against the lean loop measured in "
        "the same rounds. Classification: cross-entropy, SGD lr 0.01 momentum 0.9; the LSTM: "
        "MSE, Adam lr 0.001. Keras builds the same layers with its own initializers and "
        "optimizer; Lightning's `self.log` and skorch's per-batch loss record are their "
        "idiomatic defaults.",
        "",
    ]
    for workload, outcomes in results.items():
        parts += [f"### {workload}", "", *workload_table(outcomes), ""]
    parts += [
        "### torchloom against each peer (torchloom samples/s / peer samples/s)",
        "",
        *versus_table(results),
        "",
        *reading_lines(
            any("compile" in o.contender.name for outcomes in results.values() for o in outcomes)
        ),
        "",
    ]
    if studies:
        parts += ["### Start-up", "", *startup_lines(studies), ""]
        parts += [
            "### Where the memory goes",
            "",
            "The peak RSS columns above include each framework's imports. What a torchloom fit "
            "with its outputs imports, in turn (the lean loop pays `torch` and `torch._dynamo`, "
            "through its first optimizer, too; torchmetrics imports scipy through its audio "
            "metrics; scikit-learn comes with the doctor's facts and the data split):",
            "",
            *memory_lines(studies),
            "",
        ]
        parts += [
            "### The first optimizer",
            "",
            "The first `torch.optim` optimizer in a process imports `torch._dynamo`: "
            "`Optimizer.add_param_group` and `zero_grad` are wrapped in "
            "`torch._disable_dynamo` (torch/_compile.py), which imports `torch._dynamo` on "
            "its first call (`python -X importtime` shows `torch._dynamo` and its "
            "`symbolic_convert`, `trace_rules` and `variables` as the bulk). Every PyTorch "
            "contender pays it once per process; Lightning and Keras import it with their own "
            "import. " + overlap_verdict(studies),
            "",
            *first_optimizer_lines(studies),
            "",
            "### Time to accuracy",
            "",
            *accuracy_lines(studies),
            "",
            "### Scaling (lean loop vs torchloom.fit)",
            "",
            "The tutorial MLP on random rows x 64 features as the rows grow, and on "
            f"{studies['scaling']['width_rows']:,} rows x 784 with two hidden layers of the given "
            "width. Cost should grow linearly with the rows (flat samples/s), and peak memory "
            "should be the imports, the data, the model and one batch's activations: the last "
            "column is what remains after the imports and the data.",
            "",
            *scaling_lines(studies),
            "",
        ]
        parts += [f"![{name}](images/{name})" for name in plot_scaling(studies)] + [""]
    return "\n".join(parts)


def write_section(text: str) -> None:
    """Replace the peers section of docs/benchmarks.md (appended the first time)."""
    replace_section(DOCS_PATH, "peers", "benchmarks/peers.py", text, at_top=False)
