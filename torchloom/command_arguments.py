"""Argument helpers shared by the parser (torchloom/cli.py) and the command handlers.

They live below both, so a handler never imports the parser that dispatches to it.
"""

from __future__ import annotations


def split_config_arguments(arguments: list[str]) -> tuple[str | None, list[str]]:
    """`[CONFIG] [key=value ...]` -> (config path or None, overrides)."""
    if arguments and "=" not in arguments[0]:
        return arguments[0], arguments[1:]
    return None, arguments
