"""Data: a source, a seeded (stratified) split, preprocessing fitted on train, tensors in memory.

data = torchloom.data.load("digits")                  # embedded, offline
data = torchloom.data.load("csv", path="t.csv", target="label")
data = torchloom.data.from_arrays(x, y, val=0.1, test=0.2)

Every name here is defined in a submodule and only gathered here, so no submodule ever needs to
import the package itself (which imports them all).
"""

from __future__ import annotations

from torchloom.data.arrays import from_arrays
from torchloom.data.augment import Augment
from torchloom.data.datasets import DatasetSplit, from_datasets, is_dataset, split_dataset
from torchloom.data.loader import BatchLoader
from torchloom.data.loading import load, names, option_problems, series_names
from torchloom.data.packing import pack
from torchloom.data.preprocess import Preprocess
from torchloom.data.series import Series  # noqa: F401 (importable here, as before)
from torchloom.data.sources import SOURCES, STREAMED, Table  # noqa: F401 (as Series)
from torchloom.data.splits import Data, Split
from torchloom.data.tables import split_table
from torchloom.data.windows import split_series  # noqa: F401 (as Series)

__all__ = [
    "Augment",
    "BatchLoader",
    "Data",
    "DatasetSplit",
    "Preprocess",
    "Split",
    "Table",
    "from_arrays",
    "from_datasets",
    "is_dataset",
    "split_dataset",
    "split_table",
    "load",
    "names",
    "option_problems",
    "pack",
    "series_names",
]
