"""docs/config.md's field tables, generated from the schema in torchloom/config.py.

Each option is declared once, in the schema, with its description; the tables in
docs/config.md are written from it, between marker comments, and the prose around them is
written by hand:

    <!-- generated: trainer -->          a section's fields: name, default, description
    <!-- /generated -->
    <!-- generated: fit() -->            fit()'s keywords, and the fields that have none
    <!-- /generated -->

    python -m torchloom.config_docs           # rewrite the tables in docs/config.md
    python -m torchloom.config_docs --check   # exit 1 when the file is out of date

`tests/test_options.py` fails when the file differs from what this module writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from torchloom import keywords

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
BLOCK = re.compile(r"(<!-- generated: (.+?) -->\n)(.*?)(<!-- /generated -->)", re.DOTALL)


def render(text: str) -> str:
    """`text` (docs/config.md's content) with every generated block written anew.

    Raises:
        ValueError: a marker naming no section of the schema.
    """
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2)) + m.group(4), text)


def block(name: str) -> str:
    """The markdown of the block called `name`: "fit()" or a section's dotted path."""
    if name == "fit()":
        return fit_tables()
    try:
        section = keywords.section_at(name)
    except (KeyError, ValueError):
        raise ValueError(f"<!-- generated: {name} -->: not a section of the config") from None
    rows = [
        f"| `{field}` | `{default_text(info)}` | {cell(info.description or '')} |"
        for field, info in section.model_fields.items()
    ]
    return "\n".join(["| field | default | meaning |", "|---|---|---|", *rows]) + "\n"


def fit_tables() -> str:
    """Two tables: each section's `fit()` keywords, and the fields without one and why."""
    by_section: dict[str, list[str]] = {}
    for keyword, path in keywords.fit_options().items():
        section = path[0] if len(path) > 1 or path[0] in keywords.FIT_SECTIONS else ""
        if path[0] in keywords.FIT_SECTIONS:
            named = keywords.FIT_SECTIONS[path[0]]
            bare = f", or a bare `{named}`" if named else ""
            text = f"`{keyword}`: the whole section, as a mapping{bare}"
        elif keyword != path[-1]:
            text = f"`{keyword}` (`{'.'.join(path)}`)"
        else:
            text = f"`{keyword}`"
        by_section.setdefault(section, []).append(text)
    lines = ["| section | `fit()` keywords |", "|---|---|"]
    lines += [
        f"| {f'`{section}`' if section else 'top level'} | {', '.join(texts)} |"
        for section, texts in by_section.items()
    ]
    reasons: dict[str, list[str]] = {}
    for path, reason in keywords.NOT_FIT_OPTIONS.items():
        reasons.setdefault(reason, []).append(f"`{'.'.join(path)}`")
    lines += ["", "| no `fit()` keyword | why |", "|---|---|"]
    lines += [f"| {', '.join(paths)} | {cell(reason)} |" for reason, paths in reasons.items()]
    return "\n".join(lines) + "\n"


def default_text(info: FieldInfo) -> str:
    """A field's default as YAML writes it: `true`, `null`, `0.1`, `30`, `[]`, `auto`."""
    value = info.get_default(call_default_factory=True)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, BaseModel):  # a section with its own table
        return "its defaults"
    return str(value)


def cell(text: str) -> str:
    """Text for one table cell: a `|` would end it."""
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torchloom.config_docs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--path", type=Path, default=DOC, help="the markdown file")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    wanted = render(text)
    if wanted == text:
        return 0
    if args.check:
        print(f"{args.path} is out of date: run python -m torchloom.config_docs", file=sys.stderr)
        return 1
    args.path.write_text(wanted, encoding="utf-8")
    print(f"rewrote the generated tables of {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
