"""The class-folder layout shared by image_folder and audio_folder: root/<class name>/<files>."""

from __future__ import annotations

from pathlib import Path

from torchloom.errors import DataError


def class_folder_files(
    path: str | None, source: str, kind: str, suffixes: frozenset[str] | set[str]
) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) for every `kind` file under path/<class>/, and the class names.

    Class folders and files are sorted by name, so the class indices and the order of the
    files do not depend on the file system. Hidden folders and files are skipped.
    """
    if path is None:
        raise DataError(f"data source '{source}' needs data.path: a folder of class folders.")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path: no such folder '{path}'. Give a folder of class folders.")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class folders. Expected {root}/<class name>/<{kind}>, one folder per "
            "class."
        )
    files = []
    for label, folder in enumerate(class_dirs):
        found = sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith(".")
        )
        if not found:
            raise DataError(
                f"{folder}: class folder without {kind} ({', '.join(sorted(suffixes))}). "
                f"Add {kind} or remove the folder."
            )
        files += [(f, label) for f in found]
    return files, [d.name for d in class_dirs]
