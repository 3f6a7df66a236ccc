"""The `torchloom data` tools (`torchloom data pack CONFIG OUT_DIR`), once parsed."""

from __future__ import annotations

import argparse

from torchloom.errors import TorchloomError


def data(args: argparse.Namespace) -> int:
    """Dispatch `torchloom data TOOL`."""
    return {"pack": pack}[args.data_command](args)


def pack(args: argparse.Namespace) -> int:
    """Load CONFIG's data section (split and preprocessed with its seed) and write it as shards
    in OUT_DIR; print one line with the sample counts and the bytes written."""
    from torchloom import api
    from torchloom.data.packing import pack as pack_data

    path, out_dir, *overrides = args.arguments + [None] * (2 - len(args.arguments))
    if out_dir is None or "=" in path or "=" in out_dir:
        raise TorchloomError(
            "data pack: give CONFIG and OUT_DIR first (torchloom data pack CONFIG OUT_DIR "
            f"[key=value ...]); got {' '.join(args.arguments)}."
        )
    from torchloom.data.streaming import auto_workers

    config = api.resolve_config(path, overrides)
    workers = config.data.num_workers
    workers = auto_workers() if workers == "auto" else workers
    data = api.load_data(config)
    info = pack_data(data, out_dir, chunk_bytes=args.chunk_bytes, num_workers=workers)
    counts = ", ".join(f"{name} {part['samples']:,}" for name, part in info["splits"].items())
    print(f"packed {info['name']} into {out_dir}: {counts} samples, {_size(info['bytes'])}")
    return 0


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count:,} bytes)"
    return f"{count:,} bytes"
