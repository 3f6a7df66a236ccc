"""Data sources: each turns a name (and its options) into one in-memory table.

A source returns a `Table` of numpy arrays, before any split or preprocessing. Adding a source is
one function in the module of its kind plus one line in `SOURCES`. This module is only the
registry: it imports every source module, and none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from torchloom.data.audio import audio_folder
from torchloom.data.image_stream import image_folder_stream
from torchloom.data.images import cifar10, fashion_mnist, idx, image_folder, mnist_5k
from torchloom.data.multilabel_anomaly import digits_anomaly, shuttle, yeast
from torchloom.data.series import SERIES_SOURCES, Series
from torchloom.data.shards import shards
from torchloom.data.speech import speech_digits
from torchloom.data.splits import Data
from torchloom.data.tabular import (
    Table,
    breast_cancer,
    cars,
    csv,
    diabetes,
    digits,
    iris,
    penguins,
    read_csv_file,
    wine,
)
from torchloom.data.text import rotten_tomatoes, text_csv

# `Table` and `read_csv_file` stay importable from here, where they were defined before
# `torchloom.data.tabular`; so do the table sources, bound above.
__all__ = ["SOURCES", "STREAMED", "Table", "read_csv_file"]

# A source returns a `Table`, a `Series` (time series) or, read from disk a batch at a time,
# `Data` already split.
SOURCES: dict[str, Callable[..., Table | Series | Data]] = {
    "digits": digits,
    "iris": iris,
    "wine": wine,
    "breast_cancer": breast_cancer,
    "diabetes": diabetes,
    "csv": csv,
    "penguins": penguins,
    "cars": cars,
    "fashion_mnist": fashion_mnist,
    "idx": idx,
    "mnist_5k": mnist_5k,
    "cifar10": cifar10,
    "image_folder": image_folder,
    "yeast": yeast,
    "shuttle": shuttle,
    "digits_anomaly": digits_anomaly,
    **SERIES_SOURCES,  # each returns a `Series`, cut into windows by data.windows
    "rotten_tomatoes": rotten_tomatoes,
    "text_csv": text_csv,
    "audio_folder": audio_folder,  # clips, as waveforms; log-mel features fitted on train
    "speech_digits": speech_digits,  # spoken words rendered by espeak-ng and flite
    "shards": shards,  # written by torchloom.data.pack, read a batch at a time
}

# Sources that can also stream from disk (`data.stream: true`): the same options, plus `val`,
# `test`, `seed` and `standardize`; each returns `Data` whose splits are datasets read by
# worker processes, never the whole source in memory.
STREAMED: dict[str, Callable] = {"image_folder": image_folder_stream}
