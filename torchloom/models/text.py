"""Text classifiers on token ids: a recurrent network (`text_rnn`) and a bag of embeddings
(`text_bag`).

Both take (batch, length) int64 token ids with `<pad>` (id 0) filling the tail of each row, as
`torchloom.data.text` makes them, and compute each sequence's length from its non-pad tokens, so
padding never changes a prediction: the recurrent network packs the batch (the recurrence stops
at each sequence's last real token), and the bag averages real tokens only.

The vocabulary size comes from the data (`preprocess.json`) like `in_features` does for an MLP:
left out, the embedding is sized by `torchloom.models.materialize` before training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from torchloom.errors import TorchloomError
from torchloom.models.layers import ACTIVATIONS, OutputHead

PAD_ID = 0  # the same id as torchloom.data.text.PAD_ID (models never import data)
# Callables, not type[nn.RNNBase]: RNNBase's constructor takes a mode first, its subclasses don't.
CELLS: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class TokenEmbedding(nn.Embedding):
    """`nn.Embedding` whose row count (the vocabulary size) may be set from the data.

    Built without a size it holds one placeholder row until `set_vocab_size` gives it its size;
    its weights then carry the usual `weight` key, so saved models load into a plain
    `nn.Embedding` of that size.
    """

    def __init__(self, vocab_size: int | None, embedding_dim: int, padding: bool):
        super().__init__(vocab_size or 1, embedding_dim, padding_idx=PAD_ID if padding else None)
        self.sized = vocab_size is not None

    def set_vocab_size(self, vocab_size: int) -> None:
        """Give the embedding `vocab_size` rows, freshly initialized (the pad row zero)."""
        if self.sized:
            if vocab_size > self.num_embeddings:
                raise TorchloomError(
                    f"model: its embedding holds {self.num_embeddings} tokens but the data's "
                    f"vocabulary has {vocab_size}. Raise vocab_size to {vocab_size}, or leave it "
                    "unset so it is taken from the data."
                )
            return
        weight = self.weight
        self.weight = nn.Parameter(
            torch.empty(vocab_size, self.embedding_dim, device=weight.device, dtype=weight.dtype)
        )
        self.num_embeddings = vocab_size
        self.sized = True
        self.reset_parameters()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.sized:
            raise TorchloomError(
                "model: the embedding has no vocabulary size yet. Train it on text data (fit "
                "sets it), or give vocab_size when you build the model."
            )
        return super().forward(tokens)


def set_vocab_size(model: nn.Module, vocab_size: int) -> None:
    """Size every `TokenEmbedding` in `model` for a vocabulary of `vocab_size` entries."""
    for module in model.modules():
        if isinstance(module, TokenEmbedding):
            module.set_vocab_size(vocab_size)


def _lengths(tokens: torch.Tensor) -> torch.Tensor:
    """(batch,) count of non-pad tokens per row of (batch, length) ids."""
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TorchloomError(
            f"model: text models take integer token ids (batch, length), got {tokens.dtype} "
            f"inputs of shape {tuple(tokens.shape)}. Use a text data source (rotten_tomatoes, "
            "text_csv), which tokenizes the text."
        )
    return (tokens != PAD_ID).sum(dim=1)


class TextRNN(nn.Module):
    """Embedding → LSTM/GRU over the real tokens only → the last real step's state → linear."""

    def __init__(
        self,
        embedding: TokenEmbedding,
        recurrent: nn.RNNBase,
        dropout: float,
        head: nn.Module,
    ):
        super().__init__()
        self.embedding = embedding
        self.recurrent = recurrent
        self.dropout = nn.Dropout(dropout)
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # A row of padding only (a text with no word) reads one pad token rather than nothing.
        lengths = _lengths(tokens).clamp(min=1)
        embedded = self.dropout(self.embedding(tokens))  # (batch, length, embedding_dim)
        # Packing runs the recurrence over each row's real tokens only, so the padding a batch
        # adds never enters it. The lengths must be on the CPU: one host sync per batch.
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.recurrent(packed)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); GRU: h
        # hidden: (layers * directions, batch, hidden_size), at each row's last real step (the
        # backward direction's "last" step is the first token). Take the top layer's directions.
        directions = 2 if self.recurrent.bidirectional else 1
        top = hidden[-directions:]  # (directions, batch, hidden_size)
        features = top.transpose(0, 1).reshape(len(tokens), -1)  # (batch, directions * hidden)
        return self.head(self.dropout(features))


def text_rnn(
    *,
    embedding_dim: int = 128,
    hidden: int = 128,
    layers: int = 1,
    cell: str = "lstm",
    bidirectional: bool = True,
    dropout: float = 0.3,
    padding_idx: bool = True,
    vocab_size: int | None = None,
    num_outputs: int | None = None,
) -> TextRNN:
    """A recurrent text classifier: embedding, LSTM or GRU (packed), linear head.

    Args:
        embedding_dim: size of each token's vector.
        hidden: units of the recurrent layer (per direction).
        layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        bidirectional: read each text both ways; the head sees both final states.
        dropout: on the embeddings, between recurrent layers and before the head (0: off).
        padding_idx: keep the `<pad>` embedding at zero and untrained.
        vocab_size: vocabulary entries; taken from the data when None.
        num_outputs: output units; set from the data (classes) when None.

    Returns:
        A `TextRNN` taking (batch, length) token ids, returning (batch, num_outputs) logits.

    Example:
        >>> model = text_rnn(vocab_size=100, num_outputs=2)
        >>> model(torch.tensor([[5, 7, 9, 0], [3, 0, 0, 0]])).shape
        torch.Size([2, 2])
    """
    recurrent = CELLS[cell](
        embedding_dim,
        hidden,
        num_layers=layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if layers > 1 else 0.0,  # PyTorch applies it between layers only
    )
    directions = 2 if bidirectional else 1
    head = nn.Linear(directions * hidden, num_outputs) if num_outputs else OutputHead()
    embedding = TokenEmbedding(vocab_size, embedding_dim, padding_idx)
    return TextRNN(embedding, recurrent, dropout, head)


class TextBag(nn.Module):
    """Embedding → mean over each row's real tokens → MLP head (a fastText-style classifier)."""

    def __init__(self, embedding: TokenEmbedding, head: nn.Sequential):
        super().__init__()
        self.embedding = embedding
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = _lengths(tokens)
        mask = (tokens != PAD_ID).unsqueeze(-1)  # (batch, length, 1)
        embedded = self.embedding(tokens)  # (batch, length, embedding_dim)
        # Masked mean: pad positions add exactly zero, and the count is of real tokens only, so
        # extra padding changes nothing. An all-pad row averages to the zero vector.
        total = (embedded * mask).sum(dim=1)  # (batch, embedding_dim)
        mean = total / lengths.clamp(min=1).unsqueeze(-1).to(total.dtype)
        return self.head(mean)


def text_bag(
    *,
    embedding_dim: int = 64,
    hidden: list[int] | tuple[int, ...] = (64,),
    activation: str = "relu",
    dropout: float = 0.3,
    vocab_size: int | None = None,
    num_outputs: int | None = None,
) -> TextBag:
    """A bag-of-embeddings text classifier: the mean of the tokens' vectors, then an MLP.

    Args:
        embedding_dim: size of each token's vector.
        hidden: units of each hidden layer of the head ([] for a linear head).
        activation: the head's activation, one of `ACTIVATIONS`.
        dropout: before each linear layer of the head (0: off).
        vocab_size: vocabulary entries; taken from the data when None.
        num_outputs: output units; set from the data (classes) when None.

    Returns:
        A `TextBag` taking (batch, length) token ids, returning (batch, num_outputs) logits.
    """
    layers: list[nn.Module] = []
    width = embedding_dim
    for units in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, units), ACTIVATIONS[activation]()]
        width = units
    layers += [nn.Dropout(dropout), nn.Linear(width, num_outputs) if num_outputs else OutputHead()]
    # The pad row is never read (masked out), so it needs no padding_idx.
    return TextBag(TokenEmbedding(vocab_size, embedding_dim, padding=False), nn.Sequential(*layers))


def text_problems(options: dict, hidden_list: bool) -> list[str]:
    """Option values `text_rnn` (`hidden_list` False) or `text_bag` (True) cannot take, found
    before anything is built."""
    problems = []

    def whole(key: str, value, low: int) -> None:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < low
        ):
            problems.append(f"model.{key}: expected a whole number >= {low}, got {value!r}.")

    whole("embedding_dim", options.get("embedding_dim"), 1)
    whole("layers", options.get("layers"), 1)
    whole("vocab_size", options.get("vocab_size"), 2)
    hidden = options.get("hidden")
    if hidden_list and hidden is not None:
        if not isinstance(hidden, list | tuple):
            problems.append(f"model.hidden: expected a list of layer sizes, got {hidden!r}.")
        else:
            for units in hidden:
                whole("hidden", units, 1)
    else:
        whole("hidden", hidden, 1)
    if "cell" in options and options["cell"] not in CELLS:
        problems.append(f"model.cell: expected one of {', '.join(CELLS)}, got {options['cell']!r}.")
    if "activation" in options and options["activation"] not in ACTIVATIONS:
        problems.append(
            f"model.activation: expected one of {', '.join(ACTIVATIONS)}, got "
            f"{options['activation']!r}."
        )
    dropout = options.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f"model.dropout: expected a probability in [0, 1), got {dropout!r}.")
    return problems
