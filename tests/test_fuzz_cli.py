"""The command line under fuzzing: random argument lists built from the parser's own commands
and options (and garbage), and random input files for `torchloom predict`, run in-process
through `torchloom.cli.main` as a shell would call it.

Every case must exit 0, or 2 with an error on stderr (one `error:` line, or argparse's usage
and its error) and no traceback; any exception out of `main` fails it. Cases are derandomized
and counted (tests/fuzzing.py). Nothing here can train long: configs are tiny (iris, one
epoch), step and trial counts come from a short list, and `serve` is only given paths that are
not runs (a real one would serve until stopped).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import string
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

import torchloom as tl
from tests.fuzzing import fuzz, mostly, trained_fuzz_runs, usually  # noqa: F401 (fixture)
from torchloom.cli import EXIT_USER_ERROR, main

RUN_KINDS = ["table", "numbers", "image", "text"]
# Cases each test runs (each asserts it ran them all).
EXAMPLES = {"command lines": 400, "predict files": 100}  # predict files: for each run


def cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `torchloom ARGV`, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse: --help (0), a usage error (2)
                code = exit.code if isinstance(exit.code, int) else 0
    finally:
        sys.stdin = saved_stdin
    return code, out.getvalue(), err.getvalue()


def check_exit(code: int, stderr: str) -> None:
    """0, or 2 with one error (ours: a single `error:` line; argparse's: usage, then its error
    line), never a traceback."""
    assert "Traceback" not in stderr, stderr
    assert code in (0, EXIT_USER_ERROR), (code, stderr)
    if code == EXIT_USER_ERROR:
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, stderr
        assert errors[0].startswith(("error: ", "usage: ", "torchloom")), stderr


# --- a folder of things to name on the command line -------------------------------------------

TINY = """data: {name: iris}
model: {name: mlp, hidden: [8]}
trainer: {epochs: 1, progress: false}
output: {dir: null}
"""


@pytest.fixture
def place(tmp_path, fuzz_runs, monkeypatch) -> Path:
    """A working folder holding copies of the fuzz runs (commands may write into a run
    directory, as export does), configs good and bad, inputs, and things that are neither."""
    monkeypatch.chdir(tmp_path)  # `runs` and output.dir default to ./runs
    for kind in RUN_KINDS:
        shutil.copytree(fuzz_runs[kind], tmp_path / kind)
    damaged = tmp_path / "damaged"
    shutil.copytree(fuzz_runs["numbers"], damaged)
    (damaged / "config.yaml").write_text("model: [unclosed\n")
    (tmp_path / "empty").mkdir()
    files = {
        "tiny.yaml": TINY,
        "search.yaml": TINY + "search: {optimizer.lr: {log_uniform: [1.0e-3, 0.1]}}\n",
        "broken.yaml": "data: {name: iris\n",
        "wrong.yaml": "data: {name: irises}\ntrainer: {epochs: -1}\nbogus: 1\n",
        "list.yaml": "- 1\n- 2\n",
        "python.yaml": "!!python/object/apply:os.system ['true']\n",
        "notes.txt": "great fun\n\ndull mess\n",
        "rows.csv": "a,b\n1,2\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "garbage.bin").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    for kind, rows in (
        ("numbers", np.ones((3, 4))),
        ("table", [["Biscoe", 40, 18, 200, 4000, "male", 2008]]),
    ):
        columns = tl.load_run(fuzz_runs[kind], data=False).preprocess.input_columns
        pd.DataFrame(rows, columns=columns).to_csv(tmp_path / f"{kind}.csv", index=False)
    np.save(tmp_path / "pixels.npy", np.zeros((2, 1, 8, 8)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp_path


NOT_RUNS = ["missing", "empty", "damaged", "tiny.yaml", ".", ""]
CONFIGS = ["tiny.yaml"]
BAD_CONFIGS = ["broken.yaml", "wrong.yaml", "list.yaml", "python.yaml", "missing.yaml", "empty"]
BAD_CONFIGS += ["notes.txt", "garbage.bin", "numbers"]
INPUTS = {"table": "table.csv", "numbers": "numbers.csv", "image": "pixels.npy"}
INPUTS["text"] = "notes.txt"
BAD_INPUTS = ["objects.npy", "garbage.bin", "missing.csv", "empty", "tiny.yaml", "-", "rows.csv"]
BAD_OUTPUTS = ["empty", "missing/out.csv", "tiny.yaml", "plot.txt"]
COUNTS = ["1", "2", "3"]  # steps, trials, samples: a few at most
BAD_NUMBERS = ["0", "-1", "x", "1.5", "nan", "", "1e3"]
OVERRIDES = [
    "trainer.epochs=1", "optimizer.lr=0.1", "optimizer.name=adam", "model.hidden=[4]",
    "data.name=wine", "trainer.batch_size=16", "output.dir=null", "loss.name=cross_entropy",
]  # fmt: skip
BAD_OVERRIDES = [
    "trainer.epochs=0", "trainer.epochs=x", "optimizer.lr=-1", "optimizer.name=adamm",
    "model.hidden=x", "data.name=bogus", "trainer.batch_size=0", "a=b", "=", "trainer.=1",
    "trainer.device=cuda", "data.val=2", "model=3", "loss.name=mse",
]  # fmt: skip
GARBAGE = ["", "-", "--", "-x", "--bogus", "=", "a=b", "é", " ", "--json", "-o", "x" * 300]


def any_of(usual: list[str], unusual: list[str] = ()) -> st.SearchStrategy:
    """Mostly one of `usual`, else one of `unusual` or a garbage token."""
    return mostly(usual, [*unusual, *GARBAGE])


def options(draw, table: dict[str, st.SearchStrategy | None]) -> list[str]:
    """Some of the command's options, each with a drawn value (None: a flag)."""
    chosen = draw(st.lists(st.sampled_from(sorted(table)), max_size=3, unique=True))
    argv = []
    for flag in chosen:
        argv.append(flag)
        if table[flag] is not None:
            argv.append(draw(table[flag]))
    return argv


@st.composite
def command_lines(draw) -> list[str]:
    """An argument list for `torchloom`: a real command with arguments mostly of the right
    kind, some of the wrong kind, and now and then a garbage token anywhere."""
    runs = any_of(RUN_KINDS, NOT_RUNS)
    configs = any_of(CONFIGS, BAD_CONFIGS)
    counts, outputs = any_of(COUNTS, BAD_NUMBERS), any_of(["out.csv"], BAD_OUTPUTS)
    plots, exports = any_of(["plot.png"], BAD_OUTPUTS), any_of(["model.out"], BAD_OUTPUTS)
    overrides = st.lists(any_of(OVERRIDES, BAD_OVERRIDES), max_size=3)
    commands = ["predict", "evaluate", "export", "doctor", "explain", "runs", "summary"]
    command = draw(st.sampled_from([*commands, "lr-find", "train", "tune", "serve", "data", ""]))
    run = draw(runs)
    given = draw(any_of([INPUTS.get(run, "numbers.csv")], [*INPUTS.values(), *BAD_INPUTS]))
    if command == "predict":
        argv = [command, run, given][: draw(mostly([3], [2, 1]))]
        argv += options(draw, {"-o": outputs, "--steps": counts, "--samples": counts})
    elif command in ("evaluate", "doctor"):
        table = {"--json": None}
        if command == "evaluate":
            table["--split"] = any_of(["train", "val", "test"])
        argv = [command, run, *options(draw, table)]
    elif command == "export":
        formats = any_of(["torchscript", "exported-program", "onnx"], ["bogus"])
        argv = [command, run, "--format", draw(formats), *options(draw, {"-o": exports})]
        if draw(mostly([False], [True])):
            argv.remove("--format")  # a required option left out
    elif command == "explain":
        table = {"--method": any_of(["integrated-gradients", "saliency"]), "--top": counts}
        table.update({"--target": any_of(["0", "1", "Adelie"]), "--plot": plots})
        argv = [command, run, given, *options(draw, {**table, "--json": None})]
    elif command == "runs":
        argv = [command, *draw(st.lists(any_of([".", "missing", "table"]), max_size=1))]
        argv += options(draw, {"--json": None, "--compare": runs})
        if "--compare" in argv:
            argv.insert(argv.index("--compare") + 2, draw(runs))
    elif command in ("summary", "train", "lr-find", "tune"):
        argv = [command, draw(configs), *draw(overrides)]
        if command == "train" and draw(mostly([False], [True])):
            argv = [command, "--resume", run, *draw(overrides)[:1]]
        if command == "lr-find":
            argv += ["--steps", draw(counts), "--plot", draw(plots)]
            argv += options(draw, {"--start-lr": any_of(["1e-4"]), "--end-lr": any_of(["1"])})
        if command == "tune":
            argv[1] = draw(any_of(["search.yaml"], [*CONFIGS, *BAD_CONFIGS]))
            argv += ["--trials", draw(counts), "--study", "study.db"]
    elif command == "serve":  # never a run directory: a real one would serve until stopped
        argv = [command, draw(any_of(NOT_RUNS))]
        table = {"--host": any_of(["0.0.0.0", "localhost", "::1"]), "--token": any_of(["t"])}
        table.update({"--port": counts, "--max-batch": counts, "--batch-wait-ms": counts})
        argv += options(draw, {**table, "--max-body-mb": counts})
    elif command == "data":
        argv = [command, draw(any_of(["pack"])), draw(configs), draw(any_of(["shards", "empty"]))]
        argv += [*draw(overrides)[:1], "data.num_workers=0"]
        argv += options(draw, {"--chunk-bytes": any_of(["1MB", "64kB"], ["0", "x"])})
    else:
        argv = draw(st.lists(any_of(["--version", "--help"], ["bogus"]), max_size=2))
    if draw(mostly([False], [True])):  # a stray token, anywhere
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(GARBAGE)))
    if draw(mostly([False], [True], share=0.95)):
        argv.append("--help")
    return argv


@pytest.mark.slow
def test_any_command_line_exits_0_or_2_without_a_traceback(place):
    codes = {0: 0, EXIT_USER_ERROR: 0}

    def check(argv):
        code, _, stderr = cli(argv)
        check_exit(code, stderr)
        codes[code] += 1

    ran = fuzz(command_lines(), EXAMPLES["command lines"], check)
    assert ran >= EXAMPLES["command lines"], ran
    print("command lines:", ran, codes)
    assert codes[0] >= 40 and codes[EXIT_USER_ERROR] >= 100, codes


# --- input files for predict ----------------------------------------------------------------

CELLS = st.one_of(
    st.floats(-100, 100),
    st.floats(),
    st.integers(),
    st.none(),
    st.text(string.printable, max_size=6),
)


@st.composite
def input_files(draw, run) -> tuple[str, bytes]:
    """(file name, its bytes): a CSV of the run's columns (some missing, renamed or extra,
    cells of any kind), a .npy array of any shape and dtype, text lines, or bytes that are
    none of these."""
    columns = run.preprocess.input_columns
    rows = draw(st.integers(0, 4))
    text_run = run.preprocess.tokenizer is not None
    kind = draw(
        mostly(["lines", "csv"] if text_run else ["csv", "npy"], ["csv", "npy", "lines", "bytes"])
    )
    if kind == "csv":
        names = draw(mostly([columns], [columns[1:], [*columns, "extra"], ["x"], []]))
        categories = run.preprocess.columns.categories if run.preprocess.columns else {}
        frame = {}
        for name in names:
            usual = (
                st.sampled_from(categories[name]) if name in categories else st.floats(-100, 100)
            )
            frame[name] = [draw(usually(usual, CELLS, share=0.97)) for _ in range(rows)]
        text = pd.DataFrame(frame).to_csv(index=False)
        if draw(mostly([False], [True])):
            text = text[: draw(st.integers(0, len(text)))]  # cut anywhere
        return "input.csv", text.encode()
    if kind == "npy":
        shape = tuple(run.preprocess.extra["input_shape"])
        shape = draw(mostly([(rows, *shape)], [(rows,), (rows, 3), (), (rows, 8, 8, 1)]))
        dtype = draw(mostly(["float64", "float32", "int64"], ["bool", "U3", "complex64"]))
        buffer = io.BytesIO()
        np.save(buffer, np.random.default_rng(rows).normal(size=shape).astype(dtype))
        data = buffer.getvalue()
        if draw(mostly([False], [True])):
            data = data[: draw(st.integers(0, len(data)))]
        return "input.npy", data
    if kind == "lines":
        lines = st.lists(
            st.one_of(st.sampled_from(["great fun", "dull mess", ""]), st.text(max_size=30)),
            max_size=5,
        )
        name = draw(mostly(["input.txt"], ["input", "input.json", "-"]))
        return name, "\n".join(draw(lines)).encode("utf-8", "surrogatepass")
    name = draw(st.sampled_from(["input.csv", "input.npy", "input.txt", "input.png"]))
    return name, draw(st.binary(max_size=64))


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_any_predict_input_file_exits_0_with_predictions_or_2_with_one_error(
    fuzz_runs, kind, tmp_path
):
    run = tl.load_run(fuzz_runs[kind], data=False)
    codes = {0: 0, EXIT_USER_ERROR: 0}

    def check(case):
        (name, data), output = case
        path = tmp_path / name
        stdin = ""
        if name == "-":
            stdin = data.decode("utf-8", "surrogateescape")
        else:
            path.write_bytes(data)
        argv = ["predict", str(fuzz_runs[kind]), name if name == "-" else str(path)]
        if output:
            argv += ["-o", str(tmp_path / "predictions.csv")]
        code, stdout, stderr = cli(argv, stdin)
        check_exit(code, stderr)
        codes[code] += 1
        if code == EXIT_USER_ERROR:  # the arguments parse: the error is ours, on one line
            assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        if code == 0:
            written = (tmp_path / "predictions.csv").read_text() if output else stdout
            frame = pd.read_csv(io.StringIO(written))
            probabilities = frame[[f"probability/{name}" for name in run.preprocess.classes]]
            assert "prediction" in frame.columns
            # An input with no rows (an empty .npy array) gets the header alone.
            np.testing.assert_allclose(probabilities.sum(axis=1).astype(float), 1, rtol=1e-5)

    cases = st.tuples(input_files(run), st.booleans())
    ran = fuzz(cases, EXAMPLES["predict files"], check)
    assert ran >= EXAMPLES["predict files"], ran
    print(f"predict files ({kind}):", ran, codes)
    assert codes[0] >= 10 and codes[EXIT_USER_ERROR] >= 10, codes
