"""The doctor: verdicts on what went wrong in a run, each with its evidence and what to try.

    run = torchloom.fit("mlp", data, epochs=30)
    torchloom.doctor(run)                  # prints the verdicts; returns a Diagnosis
    torchloom.doctor("runs/mlp-digits-...")  # the same from a run directory

It reads only what the run recorded: the epoch logs, and the diagnostics sampled during training
(`trainer.diagnostics_every`): per-layer gradient norms, update/weight ratios, dead and
saturated units, and facts about the data and the fit. Every check is described, with its
thresholds, in docs/doctor.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchloom.diagnosis import checks_data, checks_network, checks_privacy, checks_training
from torchloom.diagnosis.verdict import SEVERITIES, Evidence, Verdict
from torchloom.errors import TorchloomError

__all__ = ["CHECKS", "Diagnosis", "Evidence", "Verdict", "doctor", "evidence_from"]

# Every check, in the order verdicts are listed. A check returns a Verdict or None.
CHECKS: dict[str, Callable[[Evidence], Verdict | None]] = {
    "divergence": checks_training.divergence,
    "exploding-gradients": checks_network.exploding_gradients,
    "lr-too-high": checks_training.learning_rate_too_high,
    "lr-too-low": checks_training.learning_rate_too_low,
    "vanishing-gradients": checks_network.vanishing_gradients,
    "dead-relu": checks_network.dead_relu,
    "saturated-activations": checks_network.saturated_activations,
    "unnormalized-inputs": checks_data.unnormalized_inputs,
    "underfitting": checks_training.underfitting,
    "overfitting": checks_training.overfitting,
    "class-imbalance": checks_data.class_imbalance,
    "data-leakage": checks_data.leakage,
    "small-validation-set": checks_data.small_validation_set,
    "input-bound": checks_data.input_bound,
    "privacy-noise": checks_privacy.noise,
    "privacy-clipping": checks_privacy.clipping,
}
# After a divergence the curves say nothing about the learning rate or fitting.
AFTER_DIVERGENCE_SKIPPED = ("lr-too-high", "lr-too-low", "overfitting")
# Symptoms and the causes that explain them: when a cause is found, the symptom is noted, not
# given as a verdict of its own (its advice would point the wrong way).
EXPLAINED_BY = {
    # Tiny updates come from tiny gradients, not the rate, when gradients vanish or units die.
    "lr-too-low": ("vanishing-gradients", "dead-relu", "saturated-activations"),
    # A rate that makes the loss bounce makes the validation loss bounce too.
    "overfitting": ("lr-too-high",),
    "underfitting": (
        "divergence",
        "exploding-gradients",
        "lr-too-high",
        "lr-too-low",
        "vanishing-gradients",
        "dead-relu",
        "saturated-activations",
        "unnormalized-inputs",
        "class-imbalance",
        "privacy-noise",
        "privacy-clipping",
    ),
}
# Fixes a private run's config refuses (DP-SGD clips each sample's gradient itself, and batch
# norm has no per-sample gradient): left out of its verdicts' fixes, with a note.
NOT_PRIVATE_FIXES = ("trainer.clip_norm", "model.batch_norm")


@dataclass
class Diagnosis:
    """The doctor's verdicts on one run, most severe first within the check order.

    Attributes:
        verdicts: the findings (each a `Verdict`).
        notes: what was not checked and why, and findings explained by another verdict.
        run: the run's name (its directory), or "in-memory run".
    """

    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)
    run: str = "in-memory run"

    @property
    def ids(self) -> list[str]:
        return [verdict.id for verdict in self.verdicts]

    def __getitem__(self, verdict_id: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.id == verdict_id:
                return verdict
        raise KeyError(f"no verdict '{verdict_id}'; the verdicts are: {', '.join(self.ids)}")

    def __contains__(self, verdict_id: str) -> bool:
        return verdict_id in self.ids

    def __len__(self) -> int:
        return len(self.verdicts)

    def __iter__(self):
        return iter(self.verdicts)

    def at_least(self, severity: str) -> list[Verdict]:
        """The verdicts of this severity or worse ("info" < "warning" < "error")."""
        rank = SEVERITIES.index(severity)
        return [v for v in self.verdicts if SEVERITIES.index(v.severity) >= rank]

    def to_json(self) -> dict:
        return {
            "run": self.run,
            "verdicts": [verdict.to_json() for verdict in self.verdicts],
            "notes": self.notes,
        }

    def __str__(self) -> str:
        counts = {s: sum(v.severity == s for v in self.verdicts) for s in SEVERITIES}
        if not self.verdicts:
            head = f"doctor: {self.run}: no problems found."
        else:
            shown = ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in counts.items() if n)
            head = f"doctor: {self.run}: {shown}."
        lines = [head, *(str(verdict) for verdict in self.verdicts)]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Diagnosis({self.run}: {', '.join(self.ids) or 'no problems'})"


def doctor(run, *, quiet: bool = False) -> Diagnosis:
    """Judge a run and print the verdicts.

    Args:
        run: a `Run` (from `fit`, in memory or saved) or a run directory's path.
        quiet: return the diagnosis without printing it.

    Returns:
        A `Diagnosis`: `.verdicts` (each with `id`, `severity`, `finding`, `advice`, `evidence`,
        `fix`), `.ids`, `.to_json()`, `"overfitting" in diagnosis`.

    Raises:
        TorchloomError: a path that is not a run directory.

    Example:
        >>> diagnosis = torchloom.doctor(run, quiet=True)
        >>> diagnosis.ids
        []
    """
    if hasattr(run, "wait"):  # a run fit just wrote: its facts may still be being measured
        run.wait()
    evidence, name = evidence_from(run)
    diagnosis = diagnose(evidence, name)
    if not quiet:
        print(diagnosis)
    return diagnosis


def diagnose(evidence: Evidence, name: str = "in-memory run") -> Diagnosis:
    """Run every check on the evidence (see `CHECKS`)."""
    verdicts: dict[str, Verdict] = {}
    notes = []
    if not evidence.samples:
        notes.append(
            "no diagnostics were recorded (trainer.diagnostics_every was off): only the loss "
            "and metric curves were checked."
        )
    if len(evidence.history) < checks_training.MIN_EPOCHS:
        notes.append(
            f"{len(evidence.history)} epoch(s) logged: trends (learning rate, overfitting) need "
            f"at least {checks_training.MIN_EPOCHS}."
        )
    for check_id, check in CHECKS.items():
        if "divergence" in verdicts and check_id in AFTER_DIVERGENCE_SKIPPED:
            continue
        verdict = check(evidence)
        if verdict is not None:
            verdicts[check_id] = verdict
    for symptom, explanations in EXPLAINED_BY.items():
        causes = [cause for cause in explanations if cause in verdicts]
        if symptom in verdicts and causes:
            finding = verdicts.pop(symptom).finding.rstrip(".")
            notes.append(f"{symptom}, explained by {', '.join(causes)}: {finding}.")
    if evidence.option("trainer", "privacy") is not None:
        notes += _private_fixes(verdicts.values())
    ordered = sorted(verdicts.values(), key=lambda v: -SEVERITIES.index(v.severity))
    return Diagnosis(ordered, notes, name)


def _private_fixes(verdicts) -> list[str]:
    """Drop from a private run's verdicts the fixes its config refuses; say so once."""
    dropped: set[str] = set()
    for verdict in verdicts:
        for key in NOT_PRIVATE_FIXES:
            if key in verdict.fix:
                del verdict.fix[key]
                dropped.add(key)
    if not dropped:
        return []
    return [
        f"a private run refuses {' and '.join(sorted(dropped))}: DP-SGD clips each sample's "
        "gradient to trainer.privacy.max_grad_norm, and batch norm has no per-sample gradient; "
        "ignore that part of the advice above."
    ]


def evidence_from(run, *, facts: dict | None = None) -> tuple[Evidence, str]:
    """The evidence a `Run` or a run directory holds, and the run's name; `facts` measured
    already stand in for any the run lacks."""
    if isinstance(run, str | Path):
        return _evidence_from_directory(Path(run)), Path(run).name
    history = list(run.history)
    directory = getattr(run, "dir", None)
    if not history and directory is not None:
        history = read_history(directory)
    if directory is not None and (directory / "config.yaml").is_file():
        from torchloom.config import read_yaml

        config = read_yaml(directory / "config.yaml")
    else:
        config = run.config.model_dump(mode="json")
        config["model"] = _model_options(run.model)
    diagnostics = run.diagnostics
    if (diagnostics is None or "facts" not in diagnostics) and facts is not None:
        diagnostics = {"samples": [], "layers": [], **(diagnostics or {}), "facts": facts}
    elif (diagnostics is None or "facts" not in diagnostics) and run.data is not None:
        # Recording was off, or the run kept no directory (facts are measured at the end of fit
        # only for runs that write one): measure them now, from the data in hand.
        from torchloom.diagnosis.facts import run_facts

        diagnostics = {"samples": [], "layers": [], **(diagnostics or {}), "facts": run_facts(run)}
    return Evidence(history, config, diagnostics), directory.name if directory else "in-memory run"


def _model_options(model) -> dict:
    """A zoo model's name and options, its builder's defaults filled in (as config.yaml has
    them); {"name": "custom"} for the user's own module."""
    spec = getattr(model, "torchloom_build", None)
    if spec is None:
        return {"name": "custom"}
    import inspect

    from torchloom.models import BUILDERS

    defaults = {
        key: list(p.default) if isinstance(p.default, tuple) else p.default
        for key, p in inspect.signature(BUILDERS[spec["name"]]).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **spec}


def _evidence_from_directory(directory: Path) -> Evidence:
    from torchloom.config import read_yaml

    if not (directory / "config.yaml").is_file():
        raise TorchloomError(
            f"{directory}: not a run directory (no config.yaml). Give the folder "
            "`torchloom train` printed at the end of training."
        )
    config = read_yaml(directory / "config.yaml")
    diagnostics = None
    if (directory / "diagnostics.json").is_file():
        try:
            diagnostics = json.loads((directory / "diagnostics.json").read_text())
        except json.JSONDecodeError as error:
            raise TorchloomError(
                f"{directory / 'diagnostics.json'}: not valid JSON ({error}). Delete it to "
                "judge the run from its metrics alone."
            ) from None
    return Evidence(read_history(directory), config, diagnostics)


def read_history(directory: Path) -> list[dict]:
    """The epoch lines of `metrics.jsonl` (NaN and Infinity included, as json writes them)."""
    path = Path(directory) / "metrics.jsonl"
    if not path.is_file():
        raise TorchloomError(
            f"{directory}: no metrics.jsonl, so there is nothing to judge. Was the run "
            "interrupted before its first epoch?"
        )
    history = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise TorchloomError(f"{path}, line {number}: not valid JSON.") from None
        if row.get("kind") == "epoch":
            history.append({k: v for k, v in row.items() if k not in ("kind", "step")})
    return history
