"""What the fuzz tests (tests/test_fuzz.py, tests/test_fuzz_cli.py) share.

Every case is drawn derandomized, with no example database: the same cases run on every
machine and every run, so a failure on CI fails the same way locally, and Hypothesis prints the
falsifying case. `fuzz` counts the cases a test really ran, for the test to assert. A clean end
is a result or a `TorchloomError` (its subclasses included); any other exception fails the case.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchloom as tl

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


def fuzz(strategy: st.SearchStrategy, examples: int, check: Callable[[object], None]) -> int:
    """Run `check` on `examples` cases drawn from `strategy`, the same cases every run, and
    return how many it ran (Hypothesis stops early when it runs out of distinct cases, so the
    caller asserts the count)."""
    ran = 0

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def case(value):
        nonlocal ran
        ran += 1
        try:
            check(value)
        except BaseException as error:
            # Hypothesis's own "Failing test case" line comes out blank while the schemathesis
            # pytest plugin is loaded: name the case here too.
            with np.printoptions(threshold=sys.maxsize):
                error.add_note(f"fuzz case: {describe(value)}")
            raise

    case()
    return ran


def describe(value) -> str:
    """`repr`, with DataFrames written out whole (their repr elides columns)."""
    if isinstance(value, pd.DataFrame):
        return f"pd.DataFrame({value.to_dict('list')!r})"
    if isinstance(value, tuple | list):
        items = ", ".join(map(describe, value)) + (
            "," if len(value) == 1 and isinstance(value, tuple) else ""
        )
        return f"({items})" if isinstance(value, tuple) else f"[{items}]"
    return repr(value)


def mostly(usual: Sequence, unusual: Sequence = (), share: float = 0.85) -> st.SearchStrategy:
    """One of `usual` about `share` of the time, else one of `unusual` (mistakes: drawn less
    often, so that a case with several parts still often has every part right)."""
    times = max(1, math.ceil(share / (1 - share) * len(unusual) / len(usual)))
    return st.sampled_from([*usual] * times + [*unusual])


def usually(
    usual: st.SearchStrategy, unusual: st.SearchStrategy, share: float = 0.85
) -> st.SearchStrategy:
    """A value from `usual` about `share` of the time, else one from `unusual`
    (`st.one_of` draws its branches alike)."""
    return mostly([usual], [unusual], share).flatmap(lambda strategy: strategy)


def outcome(action: Callable[[], object]) -> str:
    """ "ok" when `action` returns, "error" when it raises a `TorchloomError` with a message;
    any other exception propagates (and fails the case)."""
    try:
        action()
    except tl.TorchloomError as error:
        message = str(error)
        assert message.strip() and "Traceback" not in message, repr(message)
        return "error"
    return "ok"


REVIEWS = 60  # rows of the text run's CSV


# Named apart from its fixture name, so the test modules that import it can take a `fuzz_runs`
# argument without shadowing the import.
@pytest.fixture(scope="session", name="fuzz_runs")
def trained_fuzz_runs(tmp_path_factory) -> dict[str, Path]:
    """One small trained run per kind of input (one epoch: the fuzzing needs a model, not a
    good one): a table with text columns and blanks (penguins), plain numbers (iris), 8x8
    images (digits) and raw text."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    reviews = root / "reviews.csv"
    pd.DataFrame(
        {
            "review": [f"{'great fun' if i % 2 else 'dull mess'} word{i}" for i in range(REVIEWS)],
            "stars": ["good" if i % 2 else "bad" for i in range(REVIEWS)],
        }
    ).to_csv(reviews, index=False)
    small = {"tensorboard": False, "diagnostics_every": 0}
    trained = {
        "table": ("mlp", tl.data.load("penguins", missing="most_frequent"), {}),
        "numbers": ("mlp", tl.data.load("iris"), {}),
        "image": (
            tl.models.build("convnet", channels=[4], hidden=[16]),
            tl.data.load("digits", shape="image"),
            {"batch_size": 200},
        ),
        "text": (
            "text_bag",
            tl.data.load("text_csv", path=str(reviews), text_column="review", label_column="stars"),
            {},
        ),
    }
    runs = {}
    for name, (model, data, options) in trained.items():
        run = tl.fit(
            model, data, epochs=1, progress=False, output_dir=root, name=name, **small, **options
        )
        runs[name] = run.wait().dir
    return runs
