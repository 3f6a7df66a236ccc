"""`load`: a data source by name, split, with preprocessing fitted on train; and what the config
checks ask of the sources (their names and options)."""

from __future__ import annotations

from torchloom.data.series import Series
from torchloom.data.sources import SOURCES, STREAMED
from torchloom.data.splits import Data
from torchloom.data.tables import split_table
from torchloom.data.windows import split_series
from torchloom.errors import DataError, lookup

__all__ = ["load", "names", "option_problems", "series_names"]


def names() -> list[str]:
    """The built-in data sources."""
    return sorted(SOURCES)


def series_names() -> list[str]:
    """The time series sources (they take counts of time steps for val and test)."""
    from torchloom.data.series import SERIES_SOURCES

    return sorted(SERIES_SOURCES)


def option_problems(name: str, options: dict, where: str = "data") -> list[str]:
    """Options that source `name` does not take, one line each with the closest known option."""
    import inspect

    from torchloom.errors import unknown_option_problems

    if name not in SOURCES:
        return []
    known = list(inspect.signature(SOURCES[name]).parameters)
    return unknown_option_problems(f"data source '{name}'", options, known, where)


LOAD_KEYWORDS = ("val", "test", "seed", "standardize", "missing", "stream")


def load(
    name: str,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    standardize: bool | str = True,
    missing: str | dict | None = None,
    stream: bool = False,
    **options,
) -> Data:
    """Load a built-in or file data source, split it, and fit preprocessing on train.

    Args:
        name: a source from `names()`: "digits", "iris", "wine", "breast_cancer", "diabetes",
            "csv" (with `path=` and `target=`), the image sources "fashion_mnist", "idx",
            "mnist_5k", "cifar10", "image_folder", the time series "sunspots", "nile", "co2",
            "elnino", "series_csv" (see `torchloom.data.windows`), the text sources
            "rotten_tomatoes" and "text_csv" (raw text, tokenized with a vocabulary fitted on
            train; never standardized), or the audio sources "audio_folder" and
            "speech_digits" (clips as log-mel spectrograms; see `torchloom.data.audio`).
        val, test: fractions of all samples held out for validation and test (time series hold
            out their last steps: a fraction below 1, or a whole count). Sources with an
            official test set (fashion_mnist, idx, cifar10) use it whenever `test` > 0, and
            `val` is a fraction of their official training set.
        seed: seeds the split.
        standardize: scale to zero mean and unit variance, fitted on train: per feature for
            tables, per channel for images, per mel band for audio; or "per_feature" /
            "per_channel"; False is off.
        missing: what to do with missing values of a table (see `torchloom.data.missing`):
            "drop", "mean", "median", "most_frequent", "learned", or a mapping
            `{strategy, indicator, columns: {column: strategy}}`; None: a missing value is an
            error.
        stream: read the source from disk a batch at a time, by worker processes, instead of
            into memory (sources that can: `image_folder`; `shards` always streams).
        **options: the source's own options (e.g. `path`, `target` for "csv", `shape="image"`
            for "digits").

    Returns:
        A `Data` with train/val/test splits as tensors.

    Raises:
        DataError: unknown source, a missing file or column, an empty split.

    Example:
        >>> data = load("digits")
        >>> len(data.train), data.num_classes
        (1257, 10)
    """
    import inspect

    source = lookup(SOURCES, name, "data source", DataError)
    if stream:
        source = _streaming_source(name, source)
    split = {"val": val, "test": test, "seed": seed, "standardize": standardize}
    if "val" in inspect.signature(source).parameters:
        # A streamed source (shards, an image folder read from disk) splits and fits its
        # preprocessing itself, and returns `Data` whose splits are datasets.
        options = {**options, **split}
    table = _read_source(name, source, options)
    if isinstance(table, Data):  # a streamed source: already split, read a batch at a time
        table.spec = _spec(name, options, split, {"stream": True} if stream else {})
        return table
    if isinstance(table, Series):  # time series: a chronological split into windows
        data = split_series(table, val=val, test=test, standardize=standardize)
    else:
        data = split_table(
            table, val=val, test=test, seed=seed, standardize=standardize, missing=missing
        )
    if data.preprocess.tokenizer is not None:
        split["standardize"] = False  # text is tokenized, never scaled
    data.spec = _spec(name, options, split, {"missing": missing} if missing is not None else {})
    return data


def _streaming_source(name: str, source):
    """The source that reads `name` from disk a batch at a time (data.stream)."""
    import inspect

    if name not in STREAMED and "val" not in inspect.signature(source).parameters:
        from torchloom.errors import did_you_mean

        raise DataError(
            f"data.stream: source '{name}' is loaded into memory; the sources that stream "
            f"from disk are {', '.join(sorted([*STREAMED, 'shards']))}."
            f"{did_you_mean(name, STREAMED)} Remove data.stream, or pack the data into "
            "shards (torchloom data pack CONFIG OUT_DIR)."
        )
    return STREAMED.get(name, source)


def _read_source(name: str, source, options: dict):
    """`source(**options)`: a `Table`, a `Series`, or (a streamed source) `Data`; an option the
    source does not take is a `DataError` that lists the ones it does."""
    try:
        return source(**options)
    except TypeError as error:
        if "unexpected keyword" not in str(error):
            raise
        import inspect

        from torchloom.errors import unknown_option_message

        own = list(inspect.signature(source).parameters)
        bad = next(k for k in options if k not in own)
        # load()'s own keywords too: `vall=` is most likely a misspelled `val=`.
        known = [*own, *(k for k in LOAD_KEYWORDS if k not in own)]
        raise DataError(unknown_option_message(f"data source '{name}'", bad, known)) from None


def _spec(name: str, options: dict, split: dict, extra: dict) -> dict:
    """How to load the data again: the source, its own options, how it was split, `extra`."""
    split_keys = ("val", "test", "seed", "standardize", "task")
    source_options = {k: v for k, v in options.items() if k not in split_keys}
    return {"name": name, **source_options, **split, **extra}
