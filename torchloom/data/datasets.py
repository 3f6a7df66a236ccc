"""The user's own data: any map-style `Dataset`, `IterableDataset` or `DataLoader`, as `Data`.

    data = torchloom.data.from_datasets(train=trainset, val=valset)   # datasets or loaders
    run = torchloom.fit(net, DataLoader(trainset, batch_size=100, shuffle=True, num_workers=2))

Nothing is read into memory: a `DatasetSplit` keeps the dataset (and, for a map-style dataset
split by torchloom, the indices of its rows). The first batch tells the input shape (zoo models
size themselves from it) and the kind of targets (the task, when not given); the number of
classes comes from the dataset's `classes` or `targets` attribute (as torchvision's datasets
and Hugging Face's `ClassLabel` features have), or from one pass over the training targets.
Batches are made by `torchloom.data.streaming.StreamLoader`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from torchloom.data.preprocess import Preprocess
from torchloom.data.samples import Keys
from torchloom.data.splits import Data, split_rows
from torchloom.errors import DataError


@dataclass
class DatasetSplit:
    """One split read from a user's dataset, a batch at a time.

    Attributes:
        dataset: the map-style or iterable dataset.
        indices: for a map-style dataset split by torchloom, the rows of `dataset` in this split
            (in order); None for all of it.
        keys: the input and target keys of dict samples.
        name: how messages name it ("train dataset").
        user_loader: the `DataLoader` the user gave, whose options (collate function, sampler,
            workers) the training loader keeps; None for a bare dataset.
        input_shape, target_shape: one sample's shapes, from the first batch.
        target_dtype: the targets' dtype as the dataset gives them.
    """

    dataset: Dataset
    indices: np.ndarray | None = None
    keys: Keys = field(default_factory=Keys)
    name: str = "train dataset"
    user_loader: DataLoader | None = None
    input_shape: tuple[int, ...] = ()
    target_shape: tuple[int, ...] = ()
    target_dtype: torch.dtype = torch.int64
    # The first two inputs, read once (a model's lazy layers and TensorBoard's graph use them).
    example: torch.Tensor | None = field(default=None, repr=False, compare=False)
    # The task's cast and check of each batch (`torchloom.assemble.BatchCheck`), set by fit.
    check: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = field(
        default=None, repr=False, compare=False
    )
    # Worker processes its evaluation loader uses (fit sets the training loader's count).
    workers: int = field(default=0, repr=False, compare=False)
    # Evaluation loaders with their workers kept between validations, by (batch, rank, ranks).
    eval_loaders: dict = field(default_factory=dict, repr=False, compare=False)

    streamed = True

    @property
    def iterable(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    @property
    def sized(self) -> bool:
        return self.indices is not None or hasattr(self.dataset, "__len__")

    def __len__(self) -> int:
        if self.indices is not None:
            return len(self.indices)
        try:
            return len(self.dataset)  # type: ignore[arg-type]  # an iterable one has no __len__
        except TypeError:
            raise DataError(
                f"{self.name}: this iterable dataset has no length (__len__); what needs the "
                "number of samples (held-out fractions, per-step schedules, accumulation) cannot "
                "use it. Define __len__ or give the splits separately."
            ) from None

    def row(self, position: int) -> int:
        """The dataset index of the split's `position`-th sample."""
        return int(position if self.indices is None else self.indices[position])

    def to(self, device) -> DatasetSplit:
        return self  # batches move to the device one at a time

    def batches(self, batch_size: int, device: torch.device, *, rank: int = 0, world_size: int = 1):
        """(inputs, targets) on `device`, in the split's order: this rank's contiguous part."""
        from torchloom.data.streaming import evaluation_batches

        return evaluation_batches(self, batch_size, device, rank, world_size)

    def sample(self, limit: int, seed: int = 0):
        """At most `limit` samples as an in-memory `Split` (a seeded choice), for the doctor's
        facts and baselines."""
        from torchloom.data.streaming import gather

        return gather(self, limit, seed)


def from_datasets(
    train,
    val=None,
    test=None,
    *,
    task: str | None = None,
    classes: list[str] | None = None,
    input_key: str | None = None,
    target_key: str | None = None,
    name: str | None = None,
):
    """The user's own datasets (or `DataLoader`s) as `Data` for `torchloom.fit`.

    Args:
        train: a map-style `Dataset`, an `IterableDataset`, or a `DataLoader` over either.
        val, test: the same, or None (no held-out metrics).
        task: "classification" or "regression" (the tasks this path trains); None infers it
            from the first batch's
            targets (integers are class indices), as for arrays.
        classes: class names in index order; by default the dataset's `classes`, a Hugging Face
            `ClassLabel`'s names, or "0".."k-1" with k from its `targets` or one pass over them.
        input_key, target_key: the keys of dict samples; by default the first present of
            image/features/input/... and label/target/... .
        name: the data's name in run names and messages (default: the dataset's class name).

    Returns:
        A `Data` whose splits are `DatasetSplit`s, read a batch at a time.

    Raises:
        DataError: an empty dataset, samples that are not (input, target) pairs of numbers.

    Example:
        >>> data = from_datasets(train=trainset, val=valset)
        >>> run = torchloom.fit("convnet", data, epochs=2)
    """
    keys = Keys(input_key, target_key)
    splits = {
        split_name: _split(given, keys, f"{split_name} dataset")
        for split_name, given in (("train", train), ("val", val), ("test", test))
        if given is not None
    }
    return _data(
        splits.get("train"), splits.get("val"), splits.get("test"), task, classes, name, keys
    )


def split_dataset(
    given, *, val: float, test: float, seed: int, task=None, input_key=None, target_key=None
):
    """A single dataset (or loader) given to `fit`: a map-style one is split into train/val/test
    as arrays are (`torchloom.data.splits.split_rows`: seeded, stratified by class when the
    dataset lists its `targets`, as torchvision's datasets do); an iterable one trains whole,
    without held-out metrics."""
    keys = Keys(input_key, target_key)
    whole = _split(given, keys, "dataset")
    if whole.iterable or (val == 0 and test == 0):
        return _data(replace_name(whole, "train dataset"), None, None, task, None, None, keys)
    count = len(whole)
    if count == 0:
        raise DataError("dataset: it is empty (len 0); there is nothing to train on.")
    # Stratified by class when the dataset lists its targets (torchvision's do), as arrays are;
    # else a seeded random split of the indices.
    targets = _listed_targets(whole.dataset, count)
    rows = split_rows(
        np.zeros(count) if targets is None else targets,
        val=val,
        test=test,
        seed=seed,
        name=type(whole.dataset).__name__,
        stratify=targets is not None,
    )
    parts = {name: np.sort(held) for name, held in rows.items()}
    made = {
        split_name: DatasetSplit(
            whole.dataset, rows, keys, f"{split_name} dataset", whole.user_loader
        )
        for split_name, rows in parts.items()
        if len(rows)
    }
    return _data(made["train"], made.get("val"), made.get("test"), task, None, None, keys)


def _listed_targets(dataset, count: int) -> np.ndarray | None:
    """The dataset's `targets` attribute as (count,) class indices, when it has one."""
    targets = getattr(dataset, "targets", None)
    if targets is None or callable(targets):
        return None
    values = np.asarray(targets)
    if values.shape != (count,) or not np.issubdtype(values.dtype, np.integer):
        return None
    return values


def replace_name(split: DatasetSplit, name: str) -> DatasetSplit:
    split.name = name
    return split


def is_dataset(value) -> bool:
    """A torch `Dataset` or `DataLoader` (Hugging Face `datasets.Dataset` objects included: they
    are map-style, with dict rows)."""
    return isinstance(value, Dataset | DataLoader) or _is_hugging_face(value)


def _is_hugging_face(value) -> bool:
    module = type(value).__module__
    return module.startswith("datasets.") and hasattr(value, "__getitem__")


def _split(given, keys: Keys, name: str) -> DatasetSplit:
    inner = given.dataset if isinstance(given, DataLoader) else given
    if type(inner).__module__.startswith("litdata."):
        raise DataError(
            f"{name}: a litdata {type(inner).__name__} is read through torchloom's shards "
            "source, which resumes it exactly: write the shards with torchloom.data.pack (or "
            "torchloom data pack) and train on tl.data.load('shards', path=...)."
        )
    if isinstance(given, DataLoader):
        return DatasetSplit(given.dataset, None, keys, name, given)
    if isinstance(given, Dataset) or _is_hugging_face(given):
        if _is_hugging_face(given):
            given = _hugging_face_rows(given)
        return DatasetSplit(given, None, keys, name)
    raise DataError(
        f"{name}: expected a torch Dataset, IterableDataset or DataLoader, got "
        f"{type(given).__name__}. Wrap arrays with torchloom.data.from_arrays instead."
    )


def _hugging_face_rows(dataset):
    """A Hugging Face dataset with its columns returned as NumPy (numbers, not lists)."""
    return dataset.with_format("numpy") if hasattr(dataset, "with_format") else dataset


def _data(train, val, test, task, classes, name, keys: Keys):
    if train is None:
        raise DataError("from_datasets: train is required.")
    _inspect(train)
    for split in (val, test):
        if split is not None:
            _inspect(split)
            if split.input_shape != train.input_shape:
                raise DataError(
                    f"{split.name}: its inputs are {split.input_shape}, the training inputs "
                    f"{train.input_shape}. Give every split samples of one shape."
                )
    floating = train.target_dtype.is_floating_point
    if task is None:
        task = "regression" if floating else "classification"
    if task == "classification":
        if floating or train.target_shape != ():
            raise DataError(
                f"{train.name}: classification targets must be one integer class index per "
                f"sample; the first batch has {train.target_dtype} targets of shape "
                f"{train.target_shape}. Use task='regression' for continuous targets."
            )
        classes = classes or _class_names(train)
    elif task == "regression":
        classes = None
    else:
        raise DataError(
            f"task: '{task}' trains on in-memory data only for now; the user's own datasets "
            "train 'classification' or 'regression'. Load the data as arrays "
            "(torchloom.data.from_arrays) for it."
        )
    shape = list(train.input_shape)
    preprocess = Preprocess([f"x{i}" for i in range(int(np.prod(shape)))], classes, task)
    data_name = name or type(train.dataset).__name__
    data = Data(train, val, test, preprocess, data_name)
    data.spec = {"name": "datasets", "dataset": data_name}
    if keys.input or keys.target:
        data.spec.update({"input_key": keys.input, "target_key": keys.target})
    return data


def _inspect(split: DatasetSplit) -> None:
    """Fill the split's shapes from its first batch (read in this process)."""
    from torchloom.data.streaming import first_batch

    if split.sized and len(split) == 0:
        raise DataError(f"{split.name}: it is empty (len 0); there is nothing to read.")
    inputs, targets = first_batch(split)
    split.example = inputs[:2]
    split.input_shape = tuple(inputs.shape[1:])
    split.target_shape = tuple(targets.shape[1:])
    split.target_dtype = targets.dtype


def _class_names(split: DatasetSplit) -> list[str]:
    """Class names from the dataset's attributes, else "0".."k-1" from a pass over targets."""
    dataset: Dataset | None = split.dataset
    seen = set()
    while dataset is not None and id(dataset) not in seen:  # Subset and the like wrap others
        seen.add(id(dataset))
        names = getattr(dataset, "classes", None)
        if isinstance(names, list | tuple) and names:
            return [str(name) for name in names]
        features = getattr(dataset, "features", None)  # a Hugging Face dataset's ClassLabel
        label = _hugging_face_label(features, split.keys)
        if label is not None:
            return list(label.names)
        targets = getattr(dataset, "targets", None)
        if targets is not None and not callable(targets):
            values = np.asarray(targets)
            if values.ndim == 1 and values.size and np.issubdtype(values.dtype, np.integer):
                return [str(i) for i in range(int(values.max()) + 1)]
        dataset = getattr(dataset, "dataset", None)
    return _count_classes(split)


def _hugging_face_label(features, keys: Keys):
    if not isinstance(features, dict):
        return None
    from torchloom.data.samples import TARGET_KEYS

    for key in (keys.target,) if keys.target else TARGET_KEYS:
        feature = features.get(key)
        if feature is not None and hasattr(feature, "names"):
            return feature
    return None


def _count_classes(split: DatasetSplit) -> list[str]:
    """One pass over the training targets (in worker processes for a large dataset)."""
    from torchloom.data.streaming import target_pass

    if not split.sized:
        raise DataError(
            f"{split.name}: the number of classes cannot be read from an iterable dataset "
            "without a pass over all of it. Give classes=[...] (from_datasets) or "
            "task_options, or a dataset with a `classes` attribute."
        )
    print(
        f"torchloom: counting the classes over the {len(split):,} training samples (one pass; "
        "a `classes` attribute on the dataset or from_datasets(classes=...) skips it)",
        file=sys.stderr,
        flush=True,
    )
    high = target_pass(split)
    return [str(i) for i in range(high + 1)]
