"""Error types for user mistakes, and the "did you mean ...?" messages.

A user mistake (bad config, bad data, a misspelled name) raises a subclass of `TorchloomError`,
itself a `ValueError`, so Python callers can catch the usual type. The CLI prints the message
and exits with code 2. Our own invariants use `assert`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class TorchloomError(ValueError):
    """A mistake in what the user gave us; the message says what, where, and how to fix it."""


class ConfigError(TorchloomError):
    """One or more problems in a config, all reported at once.

    Args:
        problems: one line per problem, each starting with the field path.
        source: the file (or "arguments") the config came from, for the header line.
    """

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{count} config {noun}{where}:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataError(TorchloomError):
    """Data that cannot be used as given (a missing column, a wrong shape, an empty split)."""


class StorageError(TorchloomError):
    """A file that could not be written: a full disk, a file-size limit, a read-only or
    vanished folder. The message names the file and the system's reason."""


def write_failure(path, error: OSError) -> StorageError:
    """The error for an `OSError` raised while writing `path`."""
    reason = error.strerror or type(error).__name__
    folder = Path(path).parent
    if not folder.exists():
        reason += f"; the folder {folder} does not exist (removed while the run was writing?)"
    return StorageError(f"could not write {path}: {reason}.")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_option_message(owner: str, key: str, known: Iterable[str]) -> str:
    """One line for an option `owner` does not take, with the closest known one.

    Example:
        >>> unknown_option_message("model 'mlp'", "hiden", ["hidden", "dropout"])
        "model 'mlp' has no option 'hiden'. Did you mean 'hidden'? Options: hidden, dropout."
    """
    known = [str(option) for option in known]
    return (
        f"{owner} has no option '{key}'.{did_you_mean(key, known)} "
        f"Options: {', '.join(known) or 'none'}."
    )


def unknown_option_problems(
    owner: str, options: Iterable[str], known: Iterable[str], where: str
) -> list[str]:
    """`"<where>.<key>: <unknown_option_message>"` for each key of `options` not in `known`."""
    known = list(known)
    return [
        f"{where}.{key}: {unknown_option_message(owner, key, known)}"
        for key in options
        if key not in known
    ]


def unknown_name_message(kind: str, name: object, choices: Iterable[str]) -> str:
    """One line for an unknown registry name: what was given, what exists, the closest one."""
    choices = sorted(choices)
    if isinstance(name, str) and any(mark in name for mark in (".", ":", "/")):
        return (
            f"unknown {kind} '{name}': it looks like an import path, and configs never import "
            f"code; name a registered {kind}. Known: {', '.join(choices)}."
        )
    return (
        f"unknown {kind} '{name}'.{did_you_mean(str(name), choices)} Known: {', '.join(choices)}."
    )


def lookup(registry: dict, name: str, kind: str, error: type[TorchloomError] = TorchloomError):
    """`registry[name]`, or an `error` that lists the known names and the closest one."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise error(unknown_name_message(kind, name, registry)) from None
