"""What the doctor reads about the network: a callback that samples gradients, updates and
activations every N optimizer steps, off the hot path.

On a sampled step it records, per weight tensor, the gradient norm (before clipping) and the
update/weight ratio `||w_after - w_before|| / ||w_before||`, and per activation module
(`nn.ReLU`, `nn.Sigmoid`, `nn.Tanh`) the fraction of dead or saturated units on that step's batch.
Between sampled steps it does nothing: forward hooks exist only from the end of the step before a
sampled one to that step's backward. Values stay on the device until 64 samples have gathered
(checked at epoch ends) or training ends; one `.tolist()` then brings them all to the host.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from torchloom.train.callbacks import Callback, TrainState

# Activation modules whose outputs say something the doctor can act on, and what to measure.
ACTIVATION_KINDS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}
# A sigmoid output within this of 0 or 1, or a tanh output within it of ±1, is saturated: its
# local derivative is below ~0.01 (sigmoid) or ~0.02 (tanh), so little gradient flows through.
SATURATION_MARGIN = 0.01
# Past this many samples, every second one is dropped and the stride doubles, so a long run's
# diagnostics.json stays small: its size grows with the layers, not with the steps.
MAX_SAMPLES = 1000
# Samples kept as device tensors before one transfer brings them to the host (a few numbers a
# layer each).
PENDING_LIMIT = 64


def activation_statistic(kind: str, output: torch.Tensor) -> torch.Tensor:
    """The fraction of units that are dead (ReLU) or saturated (sigmoid, tanh) on one batch.

    A ReLU unit (a feature, or a channel for images) is dead when it outputs 0 for every sample
    and position of the batch. A sigmoid/tanh output is saturated when it is within
    `SATURATION_MARGIN` of its limits; the fraction is over all outputs.

    Args:
        kind: "relu", "sigmoid" or "tanh".
        output: (batch, units, ...) the module's output.

    Returns:
        A 0-dim float tensor on the output's device (no host sync).
    """
    output = output.detach()
    if kind == "relu":
        # (batch, units, positions), a lone vector being one unit -> (units,): any output above 0?
        if output.dim() > 1:
            per_unit = output.reshape(output.shape[0], output.shape[1], -1)
        else:
            per_unit = output.reshape(-1, 1, 1)
        # A unit is alive when its largest output is above 0 (a NaN maximum: dead). One
        # reduction: `(per_unit > 0).any(2).any(0)` gives the same but writes a boolean copy of the
        # output and reduces it twice.
        return (per_unit.amax(dim=(0, 2)) > 0).logical_not().float().mean()
    if kind == "sigmoid":
        return ((output < SATURATION_MARGIN) | (output > 1 - SATURATION_MARGIN)).float().mean()
    return (output.abs() > 1 - SATURATION_MARGIN).float().mean()


def _norms(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(len(tensors),) float32 2-norms, in one fused kernel per device and dtype."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))


class DiagnosticsRecorder(Callback):
    """Samples per-layer gradient norms, update/weight ratios and activation statistics.

    Args:
        every: record on optimizer steps 1, every + 1, 2 * every + 1, ... (step 1 shows the
            network as initialized).
        activations: hook activation modules (off under `torch.compile`, where adding and removing
            hooks would recompile the graph).

    After fit, `result()` is a JSON-ready dict: `layers` (each weight tensor's name, module type
    and shape, input side first), `activations` (each hooked module's name and kind) and
    `samples`, one per recorded step: `step`, `epoch`, `lr`, `grad_norm` and `update_ratio` (one
    value per layer), `activations` (one value per activation, empty when none fired).
    """

    def __init__(self, every: int, activations: bool = True):
        self.every = every
        self.hook_activations = activations
        self.layers: list[tuple[str, nn.Parameter, str]] = []
        self.activation_modules: list[tuple[str, nn.Module, str]] = []
        self.activation_inputs: dict[str, str] = {}
        self.hooks: list = []
        self.current: dict | None = None  # the sample being recorded
        self.weights_before: list[torch.Tensor] | None = None
        self.pending: list[dict] = []  # samples whose values are still device tensors
        self.samples: list[dict] = []
        self.input: dict | None = None  # how long the loop waited on a dataset's loader
        self.started = 0.0

    # --- events -----------------------------------------------------------------------------
    def on_fit_start(self, state: TrainState) -> None:
        self.started = time.perf_counter()
        modules = dict(state.model.named_modules())
        self.layers = []
        for name, parameter in state.model.named_parameters():
            if parameter.requires_grad and parameter.dim() >= 2:  # weights, not biases or norms
                owner = modules.get(name.rpartition(".")[0], state.model)
                self.layers.append((name, parameter, type(owner).__name__))
        self.activation_modules = []
        self.activation_inputs = {}  # activation -> the weight layer before it
        previous = None
        for name, module in state.model.named_modules():
            if getattr(module, "weight", None) is not None and module is not state.model:
                previous = name
            if type(module) in ACTIVATION_KINDS and self.hook_activations:
                key = name or type(module).__name__.lower()
                self.activation_modules.append((key, module, ACTIVATION_KINDS[type(module)]))
                if previous is not None:
                    self.activation_inputs[key] = previous
        if state.step % self.every == 0:
            self._arm(state)

    def on_after_backward(self, state: TrainState) -> None:
        if self.current is None:
            return
        self._remove_hooks()
        # A weight without a gradient (unused in this forward) received nothing: norm 0.
        grads = [
            p.grad.detach() if p.grad is not None else torch.zeros_like(p.detach())
            for _, p, _ in self.layers
        ]
        self.current["grad_norm"] = _norms(grads)
        # The weights before the optimizer step, to measure the step's size in on_batch_end.
        self.weights_before = [p.detach().clone() for _, p, _ in self.layers]

    def on_batch_end(self, state: TrainState) -> None:
        if self.current is not None and self.weights_before is not None:
            after = [p.detach() for _, p, _ in self.layers]
            steps = torch._foreach_sub(after, self.weights_before) if after else ()
            ratios = _norms(steps) / _norms(self.weights_before).clamp_min(1e-12)
            self.current["update_ratio"] = ratios
            self.current["step"] = state.step
            self.pending.append(self.current)
            self.current, self.weights_before = None, None
        if state.step % self.every == 0:
            self._arm(state)  # the next step is a sampled one

    def on_epoch_end(self, state: TrainState) -> None:
        # Short epochs would pay a transfer each for a sample or two: gather a batch of them.
        if len(self.pending) >= PENDING_LIMIT:
            self._flush()

    def on_fit_end(self, state: TrainState) -> None:
        self._remove_hooks()
        self.current, self.weights_before = None, None
        self._flush()
        self._input(state.loader)

    def _input(self, loader) -> None:
        """For a loader over a dataset of the user's (it times each wait for a batch): the
        seconds the loop waited on it, of the seconds it ran, and how it read."""
        if not hasattr(loader, "wait_seconds"):
            return  # in-memory slices: nothing to wait for
        self.input = {
            "seconds": time.perf_counter() - self.started,
            "wait_seconds": loader.wait_seconds,
            "batches": loader.batches_read,
            "num_workers": loader.num_workers,
            "batched_reads": loader.batched_reads,
            "device": loader.device.type,
        }

    # --- recording ----------------------------------------------------------------------------
    def _arm(self, state: TrainState) -> None:
        self.current = {
            "epoch": state.epoch + 1,
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "activations": {},
        }
        calls: dict[str, int] = {}
        record = self.current["activations"]

        def hook_for(name: str, kind: str):
            def hook(module: nn.Module, inputs, output) -> None:
                if not module.training or not isinstance(output, torch.Tensor):
                    return  # validation passes and odd outputs are not recorded
                # A module called twice in one forward (one nn.ReLU reused) is two activations.
                calls[name] = calls.get(name, 0) + 1
                key = name if calls[name] == 1 else f"{name}#{calls[name]}"
                with torch.no_grad():
                    value = activation_statistic(kind, output)
                record.setdefault(key, []).append(value)  # one per micro-batch

            return hook

        self.hooks = [
            module.register_forward_hook(hook_for(name, kind))
            for name, module, kind in self.activation_modules
        ]

    def _remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def _flush(self) -> None:
        """Bring pending samples' values to the host: one transfer for the whole epoch."""
        if not self.pending:
            return
        tensors = []
        for sample in self.pending:
            tensors += [sample["grad_norm"], sample["update_ratio"]]
            tensors += [
                torch.stack(values).mean().reshape(1) for values in sample["activations"].values()
            ]
        # Joined on the device, then one copy: a `.cpu()` per tensor would sync once per tensor.
        device = next((t.device for t in tensors if t.numel()), torch.device("cpu"))
        flat = torch.cat([t.reshape(-1).float().to(device) for t in tensors]).tolist()
        position = 0
        for sample in self.pending:
            count = len(self.layers)
            grad_norm, position = flat[position : position + count], position + count
            update_ratio, position = flat[position : position + count], position + count
            activations = {}
            for key in sample["activations"]:
                activations[key], position = flat[position], position + 1
            self.samples.append(
                {
                    "step": sample["step"],
                    "epoch": sample["epoch"],
                    "lr": sample["lr"],
                    "grad_norm": grad_norm,
                    "update_ratio": update_ratio,
                    "activations": activations,
                }
            )
        self.pending = []
        if len(self.samples) > MAX_SAMPLES:
            self.samples = self.samples[::2]
            self.every *= 2

    def result(self) -> dict:
        """The recorded diagnostics as plain JSON-ready data (see the class docstring)."""
        return {
            "every": self.every,
            "layers": [
                {"name": name, "module": module, "shape": list(parameter.shape)}
                for name, parameter, module in self.layers
            ],
            "activations": [
                {"name": name, "kind": kind, "after": self.activation_inputs.get(name)}
                for name, _, kind in self.activation_modules
            ],
            "samples": self.samples,
            **({"input": self.input} if self.input is not None else {}),
        }
