"""What the doctor says: verdicts (id, severity, the evidence in numbers, advice) and the
evidence it reads them from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SEVERITIES = ("info", "warning", "error")


@dataclass
class Verdict:
    """One finding about a run.

    Attributes:
        id: a stable name tools can act on, e.g. "overfitting", "vanishing-gradients".
        severity: "info", "warning" or "error".
        finding: what was seen, with the numbers (epoch, layer, values).
        advice: what to try, concretely.
        evidence: the numbers behind the finding, for tools.
        fix: config overrides (dotted keys, as on the command line) that apply the main advice,
            e.g. `{"model.dropout": 0.3}`; empty when there is no single change to make.
    """

    id: str
    severity: str
    finding: str
    advice: str
    evidence: dict = field(default_factory=dict)
    fix: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.severity in SEVERITIES, self.severity

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "severity": self.severity,
            "finding": self.finding,
            "advice": self.advice,
            "evidence": _plain(self.evidence),
            "fix": _plain(self.fix),
        }

    def __str__(self) -> str:
        return f"[{self.severity}] {self.id}: {self.finding}\n    Try: {self.advice}"


def _plain(value):
    """JSON-safe values: NaN and infinity become strings (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclass
class Evidence:
    """What a run recorded, from a `Run` in memory or a run directory.

    Attributes:
        history: one dict of logs per epoch (`train/loss`, `val/loss`, `val/accuracy`, `lr`).
        config: the resolved config as plain data (sections `model`, `optimizer`, `trainer`, ...).
        diagnostics: the recorder's samples and the data facts, or None when recording was off.
    """

    history: list[dict]
    config: dict
    diagnostics: dict | None = None

    @property
    def facts(self) -> dict:
        return (self.diagnostics or {}).get("facts") or {}

    @property
    def samples(self) -> list[dict]:
        return (self.diagnostics or {}).get("samples") or []

    @property
    def layers(self) -> list[dict]:
        return (self.diagnostics or {}).get("layers") or []

    @property
    def task(self) -> str:
        return self.facts.get("task") or self.config.get("task") or "classification"

    def series(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) for each epoch that logged `key`, NaN and infinity included."""
        return [
            (int(row.get("epoch", index + 1)), float(row[key]))
            for index, row in enumerate(self.history)
            if key in row and row[key] is not None
        ]

    def option(self, *path: str, default=None):
        """A config value by path, e.g. `option("optimizer", "lr")`."""
        node = self.config
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    @property
    def is_zoo_mlp(self) -> bool:
        return self.option("model", "name") == "mlp"


def number(value: float) -> str:
    """A value as a person reads it: 3 significant digits, NaN and inf spelled out."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def percent(value: float) -> str:
    return f"{100 * value:.0f}%" if value >= 0.01 or value == 0 else f"{100 * value:.1g}%"
