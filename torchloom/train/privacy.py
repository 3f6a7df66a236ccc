"""Differentially private training (DP-SGD) from Opacus's own pieces, in torchloom's one loop.

Opacus's `PrivacyEngine.make_private` wraps a model, an optimizer and a `DataLoader`. torchloom
composes the same parts itself, so its loop, loader and checkpoints stay the ones that train:

- a `GradSampleModule` around the model computes each sample's gradient in the backward pass;
- a `DPOptimizer` around the optimizer clips each sample's gradient to `max_grad_norm`, sums
  them, adds Gaussian noise (std `noise_multiplier * max_grad_norm`) drawn from a seeded
  generator, and divides by the expected batch size before the real step;
- Opacus's accountant (RDP or PRV) records each step through the optimizer's step hook;
- batches are Poisson samples of the training split (`torchloom.data.poisson.PoissonLoader`).

With a target epsilon the noise is Opacus's `get_noise_multiplier` for the configured steps, so
the last epoch ends within the target; with a `noise_multiplier` and an epsilon, the run stops at
the last step whose epsilon stays within it. A checkpoint holds the accountant's history, the
noise generator's state and this epoch's clipping statistics, so a resumed run is bitwise the
uninterrupted one.

The guarantee covers the weights. What the run logs beside them (losses, the doctor's
gradient statistics, the clipping rate) is computed from the private data without noise.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchloom.errors import ConfigError, TorchloomError
from torchloom.train.step import Update

if TYPE_CHECKING:
    from torchloom.config import PrivacyConfig
    from torchloom.data.poisson import PoissonLoader

PRIVACY_MISSING = (
    "trainer.privacy needs Opacus, an optional extra that is not installed. Install it with: "
    'pip install "torchloom[privacy]"'
)
# Tasks whose step is the loop's: one mean loss over the batch's samples, which is what
# Opacus's per-sample gradients (loss_reduction="mean") undo.
PRIVATE_TASKS = ("classification", "regression", "multilabel", "forecast", "anomaly")
# The noise generator's seed is the run's seed mixed with this, so its stream is not the
# Poisson sampler's (both are CPU generators seeded from trainer.seed).
NOISE_SEED_OFFSET = 0x5EED_D9


def import_opacus():
    """The `opacus` module, or a `TorchloomError` naming the pip line that installs it."""
    try:
        import opacus
    except ImportError:
        raise TorchloomError(PRIVACY_MISSING) from None
    return opacus


def check_model(model: nn.Module) -> None:
    """Refuse, naming each layer, what Opacus's validators refuse (batch norm mixes the samples
    of a batch, so no sample has a gradient of its own), with Opacus's reason and the fix."""
    import_opacus()
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    # (layer type, Opacus's reason) -> the layers, so each reason is told once
    refused: dict[tuple[str, str], list[nn.Module]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    for name, module in trainable_modules(model):
        validator = ModuleValidator.VALIDATORS.get(type(module))
        for error in validator(module) if validator is not None else ():
            key = (type(module).__name__, str(error).strip().rstrip("."))
            refused.setdefault(key, []).append(module)
            names.setdefault(key, []).append(f"'{name}'")
    problems = []
    for (kind, reason), modules in refused.items():
        fix = (
            f"Replace it with nn.GroupNorm(num_groups, channels) (channels "
            f"{', '.join(str(module.num_features) for module in modules)}), or use no norm: "
            "the zoo's convnet takes model.batch_norm: false, a layer list layer_norm; the "
            "zoo's resnet has batch norm throughout (use convnet or lenet)"
            if "BatchNorm" in kind
            else "Replace it with a layer Opacus supports"
        )
        layers = ", ".join(names[(kind, reason)])
        problems.append(
            f"trainer.privacy: model layer{'s' if len(modules) > 1 else ''} {layers} ({kind}) "
            f"cannot train with differential privacy. Opacus: {reason}. {fix}."
        )
    if problems:
        raise ConfigError(problems, source="config")


def epsilon_after(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """The epsilon Opacus's accountant gives `steps` steps of DP-SGD (0 for no step)."""
    from opacus.accountants import create_accountant

    if steps == 0:
        return 0.0
    fresh = create_accountant(mechanism=accountant)
    fresh.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP's note that a larger order might be tighter
        return float(fresh.get_epsilon(delta=delta))


def noise_for(settings: PrivacyConfig, sample_rate: float, steps: int) -> float:
    """The noise multiplier: the one given, or Opacus's `get_noise_multiplier` for the target
    epsilon over `steps` steps (its epsilon is below the target by at most 0.01)."""
    if settings.noise_multiplier is not None:
        return settings.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    assert settings.epsilon is not None  # the config requires one of the two
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=settings.epsilon,
                    target_delta=settings.delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=settings.accountant,
                )
            )
        except ValueError:  # Opacus: "The privacy budget is too low."
            raise ConfigError(
                [
                    f"trainer.privacy.epsilon: {settings.epsilon:g} is too small for {steps} "
                    f"steps at sample rate {sample_rate:.3g}: no noise multiplier reaches it. "
                    "Raise epsilon, train fewer epochs, or use fewer, larger batches."
                ],
                source="config",
            ) from None


def step_budget(
    settings: PrivacyConfig, noise_multiplier: float, sample_rate: float, steps: int
) -> int | None:
    """The last step whose epsilon stays within the target, when the run's `steps` would pass
    it (a given noise multiplier with an epsilon budget); None when every step fits."""
    if settings.epsilon is None:
        return None

    def spent(count: int) -> float:
        return epsilon_after(
            noise_multiplier, sample_rate, count, settings.delta, settings.accountant
        )

    if spent(steps) <= settings.epsilon:
        return None
    low, high = 0, steps  # spent(low) <= target < spent(high); epsilon grows with the steps
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if spent(middle) <= settings.epsilon else (low, middle)
    if low == 0:
        raise ConfigError(
            [
                f"trainer.privacy: noise_multiplier {noise_multiplier:g} spends more than "
                f"epsilon {settings.epsilon:g} in its first step (epsilon {spent(1):.3g}). "
                "Raise noise_multiplier, or leave it out to have it computed from epsilon."
            ],
            source="config",
        )
    return low


class PrivateTraining:
    """Opacus's parts for one run, and what it logs, checkpoints and summarizes of them.

    Attributes:
        module: the `GradSampleModule` the loop calls (the model's parameters, hooked).
        optimizer: the `DPOptimizer` around the run's optimizer.
        accountant: Opacus's accountant, fed by the optimizer's step hook.
        generator: the noise's generator (on the training device).
        noise_multiplier, sample_rate: as the accountant sees them.
        max_steps: the step the budget ends at, or None when every configured step fits.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: PoissonLoader,
        settings: PrivacyConfig,
        *,
        epochs: int,
        seed: int,
        device: torch.device,
    ):
        import_opacus()
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        self.settings = settings
        self.loader = loader
        self.sample_rate = loader.sample_rate
        self.total_steps = epochs * len(loader)
        self.noise_multiplier = noise_for(settings, self.sample_rate, self.total_steps)
        self.max_steps = step_budget(
            settings, self.noise_multiplier, self.sample_rate, self.total_steps
        )
        loader.max_steps = self.max_steps
        try:
            self.module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        except NotImplementedError as error:  # a layer with buffers Opacus cannot sample
            raise ConfigError(
                [f"trainer.privacy: Opacus cannot compute per-sample gradients here: {error}"],
                source="config",
            ) from None
        self.generator = torch.Generator(device=device).manual_seed(seed + NOISE_SEED_OFFSET)
        self.expected_batch_size = int(loader.num_samples * self.sample_rate)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=settings.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
            generator=self.generator,
        )
        self.accountant = create_accountant(mechanism=settings.accountant)
        count_step = self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate)

        def after_noise(dp_optimizer) -> None:
            count_step(dp_optimizer)
            self._record(dp_optimizer)

        self.optimizer.attach_step_hook(after_noise)
        parameters = sum(p.numel() for p in self.optimizer.params)
        # The noise's expected norm in one step: std * sqrt(number of coordinates).
        self.noise_norm = self.noise_multiplier * settings.max_grad_norm * math.sqrt(parameters)
        # This epoch's clipped samples, samples, sum of per-sample norms, sum of the clipped
        # sums' norms, steps: on the device, read once an epoch.
        self.stats = torch.zeros(5, device=device)

    # --- per step, inside DPOptimizer.step ----------------------------------------------------
    def _record(self, optimizer) -> None:
        """Clipping and signal statistics of this step, without a host sync."""
        samples = optimizer.grad_samples  # one (batch, ...) tensor per parameter
        if len(samples[0]) == 0:
            per_sample = samples[0].new_zeros(0)
        else:
            per_parameter = [sample.reshape(len(sample), -1).norm(2, dim=1) for sample in samples]
            per_sample = torch.stack(per_parameter, dim=1).norm(2, dim=1)  # (batch,)
        summed = torch.stack([p.summed_grad.norm(2) for p in optimizer.params]).norm(2)
        self.stats += torch.stack(
            [
                (per_sample > self.settings.max_grad_norm).sum().float(),
                per_sample.new_tensor(float(len(per_sample))),
                per_sample.sum(),
                summed,
                per_sample.new_tensor(1.0),
            ]
        )

    # --- what the run reads ---------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """DP-SGD steps the accountant has counted."""
        return sum(entry[2] for entry in self.accountant.history)

    @property
    def spent(self) -> bool:
        """True once the budget's last step was taken: training ends there."""
        return self.loader.exhausted

    def epsilon(self) -> float:
        """The epsilon spent so far, by Opacus's accountant, at the configured delta."""
        if not self.steps:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RDP's note that a larger order might be tighter
            return float(self.accountant.get_epsilon(delta=self.settings.delta))

    def epoch_logs(self) -> dict[str, float]:
        """`privacy/epsilon` and this epoch's clipping statistics; starts the next epoch's."""
        clipped, samples, norms, signal, steps = self.stats.tolist()
        self.stats.zero_()
        logs = {"privacy/epsilon": self.epsilon()}
        if samples:
            logs["privacy/clipped"] = clipped / samples  # share of per-sample gradients clipped
            logs["privacy/sample_grad_norm"] = norms / samples  # their mean norm before clipping
        if steps:
            # The noise's norm over the clipped sum's, per step: above 1 the noise dominates
            # each step (averaging over steps is what training relies on).
            mean_signal = signal / steps
            logs["privacy/noise_ratio"] = self.noise_norm / mean_signal if mean_signal else math.inf
        return logs

    def summary(self) -> dict[str, Any]:
        """What summary.json and the report say of the privacy spent."""
        settings = self.settings
        return {
            "epsilon": self.epsilon(),
            "delta": settings.delta,
            "target_epsilon": settings.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": settings.max_grad_norm,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.expected_batch_size,
            "steps": self.steps,
            "accountant": settings.accountant,
            "budget_steps": self.max_steps,
            "stopped_by_budget": self.spent and self.max_steps is not None,
        }

    def announce(self) -> None:
        """One line: the noise, the sampling, and where the budget ends."""
        settings = self.settings
        total = epsilon_after(
            self.noise_multiplier,
            self.sample_rate,
            self.max_steps or self.total_steps,
            settings.delta,
            settings.accountant,
        )
        line = (
            f"torchloom: private training (Opacus, {settings.accountant}): noise multiplier "
            f"{self.noise_multiplier:.4g}, max_grad_norm {settings.max_grad_norm:g}, Poisson "
            f"sample rate {self.sample_rate:.4g} (expected batch {self.expected_batch_size}); "
            f"epsilon {total:.3f} at delta {settings.delta:g} after "
            f"{self.max_steps or self.total_steps} steps"
        )
        if self.max_steps is not None:
            line += (
                f"; the budget epsilon {settings.epsilon:g} ends training at step "
                f"{self.max_steps} of {self.total_steps} (epoch "
                f"{-(-self.max_steps // len(self.loader))})"
            )
        print(line, file=sys.stderr, flush=True)

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The accountant's history (JSON) and, under "tensors", the noise generator's state
        and this epoch's statistics."""
        return {
            "accountant": [list(entry) for entry in self.accountant.history],
            "tensors": {"noise_generator": self.generator.get_state(), "stats": self.stats},
        }

    def load_state_dict(self, saved: dict) -> None:
        self.accountant.history = [tuple(entry) for entry in saved["accountant"]]
        tensors = saved["tensors"]
        self.generator.set_state(tensors["noise_generator"])
        self.stats.copy_(tensors["stats"])

    def close(self) -> None:
        """Remove Opacus's hooks and the attributes it set on the parameters: the trained model
        is a plain module again (evaluation, export, the doctor's baseline)."""
        self.module.cleanup()
        for parameter in self.optimizer.params:
            for attribute in ("summed_grad", "grad_sample"):
                if hasattr(parameter, attribute):
                    delattr(parameter, attribute)


class PrivateUpdate(Update):
    """The loop's update with a `DPOptimizer`: zero_grad also clears the per-sample gradients
    (Opacus refuses a step on stale ones), and the backward pass runs Opacus's hooks."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        with warnings.catch_warnings():
            # The first layer's inputs need no gradient; Opacus's full backward hooks say so.
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            super().backward(loss, weight)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: PoissonLoader,
    settings: PrivacyConfig,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
) -> PrivateTraining:
    """Check the model and compose Opacus's parts around it (see the module docstring).

    Raises:
        TorchloomError: Opacus is not installed.
        ConfigError: a layer Opacus cannot train privately (batch norm), a delta not below
            1 / the training samples, an epsilon no noise reaches.
    """
    import_opacus()
    check_model(model)
    if settings.delta >= 1 / loader.num_samples:
        raise ConfigError(
            [
                f"trainer.privacy.delta: {settings.delta:g} is not below 1 / {loader.num_samples} "
                f"training samples ({1 / loader.num_samples:.3g}): such a delta allows a sample "
                "to be revealed outright. Use a smaller one, e.g. delta: 1e-5."
            ],
            source="config",
        )
    return PrivateTraining(
        model, optimizer, loader, settings, epochs=epochs, seed=seed, device=device
    )


__all__ = [
    "PRIVACY_MISSING",
    "PRIVATE_TASKS",
    "PrivateTraining",
    "PrivateUpdate",
    "check_model",
    "epsilon_after",
    "import_opacus",
    "make_private",
    "noise_for",
    "step_budget",
]
