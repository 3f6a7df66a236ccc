"""No function in torchloom runs over 80 lines unless a `# long: <reason>` comment above it says
why: a reader should find one function's whole job on one screen (STYLE.md, rule 1)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 80
REASON = re.compile(r"^\s*# long: \S")


def long_functions(source: str, path: str, limit: int = LIMIT) -> list[str]:
    """`path:line name (N lines)` for each function or method of `source` longer than `limit`
    lines (the `def` line to its last, docstring included) with no `# long: <reason>` comment on
    the line directly above it or above its decorators."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= limit:
            continue
        first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
        above = lines[first - 2] if first >= 2 else ""  # line numbers count from 1
        if not REASON.match(above):
            found.append((node.lineno, f"{path}:{node.lineno} {node.name} ({length} lines)"))
    return [line for _, line in sorted(found)]


def test_no_function_is_over_80_lines_without_a_reason():
    found = []
    for module in sorted((REPO / "torchloom").rglob("*.py")):
        found += long_functions(module.read_text(), str(module.relative_to(REPO)))
    assert not found, (
        f"functions over {LIMIT} lines; split them, or put a '# long: <reason>' comment on the "
        "line above the def (or its decorators):\n" + "\n".join(found)
    )


def body(count: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(count))


def test_the_checker_finds_a_long_function_and_accepts_a_reason(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "def short():\n"
        + body(LIMIT - 1)  # exactly the limit: allowed
        + "\n\nclass Holder:\n"
        "    @staticmethod\n"
        "    def long_method():\n" + body(LIMIT).replace("    ", "        ") + "\n\n"
        "def long_function():\n"
        '    """A docstring counts."""\n' + body(LIMIT - 1) + "\n\n"
        "# long: one table of cases reads best in one place\n"
        "@staticmethod\n"
        "def excused():\n" + body(LIMIT + 5)
    )
    found = long_functions(module.read_text(), "module.py")
    assert found == [
        f"module.py:{LIMIT + 5} long_method ({LIMIT + 1} lines)",
        f"module.py:{2 * LIMIT + 8} long_function ({LIMIT + 1} lines)",
    ]


def test_a_reason_must_sit_directly_above():
    source = "# long: too far away\n\ndef spaced():\n" + body(LIMIT)
    assert long_functions(source, "m.py") == [f"m.py:3 spaced ({LIMIT + 1} lines)"]
