"""Crash-safe file writes: a temporary file in the same folder, fsynced, then renamed."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torchloom.errors import TorchloomError, write_failure


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write `payload` to `path` so a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:  # a read-only or vanished folder
        raise write_failure(path, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):  # a full disk, a file-size limit
            raise write_failure(path, error) from None
        raise


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Writes to `path` inside this block that fail (a full disk, a vanished folder) raise a
    `StorageError` naming it, not a bare `OSError`."""
    try:
        yield
    except OSError as error:
        raise write_failure(path, error) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: object, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save a flat dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    from safetensors.torch import save

    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save(plain, metadata=metadata))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: str | Path) -> dict:
    """Tensors from a safetensors file; anything else (a pickle) is refused, never run."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except FileNotFoundError:
        raise TorchloomError(f"{path}: missing.") from None
    except Exception as error:  # safetensors raises its own types for malformed files
        detail = str(error).splitlines()[0] if str(error) else ""
        raise TorchloomError(
            f"{path}: not a readable safetensors file ({type(error).__name__}: {detail}). "
            "torchloom loads weights only from safetensors, never from pickle."
        ) from None
