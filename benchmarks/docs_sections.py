"""Replace one script's section of docs/benchmarks.md, between its markers, and keep the rest.

Several scripts write to the one page (overhead.py, peers.py); each owns the text between its
own `<!-- NAME:begin ... -->` and `<!-- NAME:end -->` lines, so a rerun of one leaves the others'
sections and any hand-written text alone.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str, script: str) -> tuple[str, str]:
    """The begin and end marker lines of section `name`, written by `script`."""
    return (
        f"<!-- {name}:begin (written by {script} --write-docs; edits here are lost) -->",
        f"<!-- {name}:end -->",
    )


def replace_section(path: Path, name: str, script: str, text: str, *, at_top: bool) -> None:
    """Put `text` between section `name`'s markers in `path`.

    Args:
        path: the markdown file (made when missing).
        name, script: the section's name and the script that owns it, as in `markers`.
        text: the new section, without markers.
        at_top: where a section not yet in the file goes: first (True) or last.
    """
    begin, end = markers(name, script)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"{begin}\n{text.strip()}\n{end}"
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        updated = before + section + rest.split(end, 1)[1]
    elif at_top:
        updated = section + "\n\n" + current.lstrip("\n")
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated, encoding="utf-8")
    print(f"wrote the {name} section of {path}")
