"""Recurrent networks (RNN, LSTM, GRU) with a linear head, sequence-to-one or -to-sequence.

    model = build("lstm", hidden=64, layers=2)            # (batch, steps, channels) -> (batch, k)
    model = build("gru", output="sequence")               # -> (batch, steps, k)

Inputs are batch-first: (batch, steps, channels). The channel count is inferred from the first
batch when `in_features` is None, and the head's width from the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from torchloom.models.layers import OutputHead, input_linear

# Callables, not type[nn.RNNBase]: RNNBase's constructor takes a mode first, its subclasses don't.
CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OUTPUTS = ("last", "sequence")


class Recurrent(nn.Module):
    """A stacked recurrent layer, dropout, and a linear head.

    `output="last"` reads the final hidden state of the last layer (both directions when
    bidirectional) and gives (batch, num_outputs); `output="sequence"` applies the head to every
    step and gives (batch, steps, num_outputs).
    """

    def __init__(
        self,
        cell: str,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        output: str,
        in_features: int | None,
        num_outputs: int | None,
    ):
        super().__init__()
        self.cell, self.output = cell, output
        self.options = {
            "hidden_size": hidden,
            "num_layers": layers,
            "bidirectional": bidirectional,
            # PyTorch's dropout acts between stacked layers only (it warns with one layer).
            "dropout": dropout if layers > 1 else 0.0,
            "batch_first": True,
        }
        self.recurrent = None if in_features is None else self._make(in_features)
        self.dropout = nn.Dropout(dropout)  # before the head, so one layer gets dropout too
        width = hidden * (2 if bidirectional else 1)
        self.head = input_linear(width, num_outputs) if num_outputs else OutputHead()

    def _make(self, channels: int) -> nn.RNNBase:
        return CELLS[self.cell](channels, **self.options)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3:
            raise ValueError(
                f"expected batch-first sequences (batch, steps, channels), got shape "
                f"{tuple(inputs.shape)}"
            )
        if self.recurrent is None:  # sized from the first batch, like torch's lazy layers
            self.recurrent = self._make(inputs.shape[-1]).to(inputs.device)
        sequence, state = self.recurrent(inputs)  # (batch, steps, hidden * directions)
        if self.output == "sequence":
            return self.head(self.dropout(sequence))  # (batch, steps, num_outputs)
        final = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        # final: (layers * directions, batch, hidden); the last layer's directions come last.
        directions = 2 if self.options["bidirectional"] else 1
        last = torch.cat(list(final[-directions:]), dim=-1)  # (batch, hidden * directions)
        return self.head(self.dropout(last))  # (batch, num_outputs)


def _builder(cell: str):
    def build(
        *,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        output: str = "last",
        in_features: int | None = None,
        num_outputs: int | None = None,
    ) -> Recurrent:
        problems = recurrent_problems(
            {
                "hidden": hidden,
                "layers": layers,
                "bidirectional": bidirectional,
                "dropout": dropout,
                "output": output,
            }
        )
        if problems:
            from torchloom.errors import TorchloomError

            raise TorchloomError(" ".join(problems))
        return Recurrent(
            cell, hidden, layers, bidirectional, dropout, output, in_features, num_outputs
        )

    build.__name__ = cell
    build.__doc__ = f"""A {cell.upper()} network with a linear head (see `Recurrent`).

    Args:
        hidden: units of each recurrent layer (per direction).
        layers: stacked recurrent layers.
        bidirectional: read the sequence both ways.
        dropout: dropout probability between stacked layers and before the head.
        output: "last" (sequence-to-one: (batch, num_outputs)) or "sequence"
            (sequence-to-sequence: (batch, steps, num_outputs)).
        in_features: channels per step; inferred from the first batch when None.
        num_outputs: head units; set from the data (e.g. the forecast horizon) when None.

    Example:
        >>> {cell}(hidden=32, in_features=1, num_outputs=3)(torch.zeros(8, 20, 1)).shape
        torch.Size([8, 3])
    """
    return build


rnn = _builder("rnn")
lstm = _builder("lstm")
gru = _builder("gru")


def recurrent_problems(options: dict) -> list[str]:
    """Bad option values of an rnn/lstm/gru model, one line each, before anything is built."""
    problems = []
    for key in ("hidden", "layers"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"model.{key}: expected a whole number >= 1, got {value!r}.")
    dropout = options.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        problems.append(f"model.dropout: expected a probability in [0, 1), got {dropout!r}.")
    if not isinstance(options.get("bidirectional", False), bool):
        problems.append(
            f"model.bidirectional: expected true or false, got {options['bidirectional']!r}."
        )
    if options.get("output", "last") not in OUTPUTS:
        problems.append(
            f"model.output: expected 'last' (sequence-to-one) or 'sequence' "
            f"(sequence-to-sequence), got {options['output']!r}."
        )
    return problems
