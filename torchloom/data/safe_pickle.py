"""Read pickled NumPy arrays (CIFAR-10's python batches) without running pickled code.

`pickle.load` calls whatever function a file names, so a crafted file runs code on load. The
`RestrictedUnpickler` here admits only what NumPy arrays of plain numbers are rebuilt from
(`numpy.ndarray`, `numpy.dtype`, the two array reconstructors, and `_codecs.encode` for
latin-1 text, which Python 3's protocol-2 pickles use for bytes); dicts, lists, tuples, numbers,
strings and bytes are pickle opcodes, not imports, so they need nothing. Every other global is
refused before it is looked up, so it never runs. Arrays of Python objects are refused as well:
their elements would be more pickled objects.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from torchloom.errors import DataError


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something besides NumPy arrays of numbers and plain containers."""


def _dtype(*args):
    """`numpy.dtype(...)` for numeric dtypes only: an object dtype would unpickle objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedPickle(f"refusing an array of Python objects (dtype {dtype})")
    return dtype


def _reconstruct(cls, shape, typecode):
    """NumPy's `_reconstruct` (how protocols 2-4 pickle arrays), for plain `ndarray` only."""
    if cls is not np.ndarray:
        raise RefusedPickle(f"refusing to rebuild an array as {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(typecode))


def _frombuffer(buffer, dtype, shape, order, axis_order=None):
    """NumPy's `_frombuffer` (how protocol 5 pickles arrays), for numeric dtypes only."""
    array = np.frombuffer(buffer, dtype=_dtype(dtype))
    if order == "K" and axis_order is not None:
        array = array.reshape(shape, order="C").transpose(axis_order)
    else:
        array = array.reshape(shape, order=order)
    return array.copy()  # own the memory: the buffer belongs to the pickle stream


def _encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as Python 3 writes bytes into protocol-2 pickles: latin-1 text only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedPickle(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


# (module, name) as written in the pickle -> what it may build. NumPy 2 renamed numpy.core to
# numpy._core; files written by either name the module they were pickled with.
ALLOWED: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that builds NumPy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"refusing to load '{module}.{name}'") from None


def load_arrays(path: str | Path):
    """Unpickle a file of NumPy arrays and plain containers, refusing everything else.

    Python 2 pickles (CIFAR-10's batches) are read with `encoding="bytes"`: their text comes back
    as bytes, dictionary keys included.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object: dicts, lists, tuples, numbers, strings, bytes and numeric arrays.

    Raises:
        DataError: the file is missing, is not a pickle, or names anything else (nothing of it
            runs).

    Example:
        >>> batch = load_arrays("cifar-10-batches-py/data_batch_1")
        >>> batch[b"data"].shape
        (10000, 3072)
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            loaded = RestrictedUnpickler(file, encoding="bytes").load()
        _check_no_objects(loaded)
        return loaded
    except RefusedPickle as error:
        raise DataError(
            f"{path}: {error}; only pickled NumPy arrays of numbers, lists and dicts are read, "
            "so nothing in the file was run. Use the original files."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
        raise DataError(
            f"{path}: not a readable pickle of arrays ({type(error).__name__}: {error}). "
            "Check that the file is complete and in the original format."
        ) from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}).") from None


def _check_no_objects(value) -> None:
    """Belt and braces: no array in the result holds Python objects."""
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise RefusedPickle(f"refusing an array of Python objects (dtype {value.dtype})")
    if isinstance(value, dict):
        for item in value.values():
            _check_no_objects(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_no_objects(item)
