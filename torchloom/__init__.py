"""torchloom: build, train, evaluate and diagnose PyTorch networks.

    import torchloom as tl
    data = tl.data.load("digits")
    model = tl.models.build("mlp", hidden=[128, 64])
    run = tl.fit(model, data, loss="cross_entropy",
                 optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9}, epochs=10)
    run.evaluate("test")        # {"accuracy": ..., "f1_macro": ...}

Submodules and functions load on first use, so `torchloom --help` never imports torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "fit": ("torchloom.api", "fit"),
    "fit_config": ("torchloom.api", "fit_config"),
    "load_run": ("torchloom.api", "load_run"),
    "resume": ("torchloom.api", "resume"),
    "lr_find": ("torchloom.lr_finder", "lr_find"),
    "doctor": ("torchloom.diagnosis", "doctor"),
    "explain": ("torchloom.explanations", "explain"),
    "Run": ("torchloom.run", "Run"),
    "Callback": ("torchloom.train.callbacks", "Callback"),
    "EarlyStopping": ("torchloom.train.callbacks", "EarlyStopping"),
    "TorchloomError": ("torchloom.errors", "TorchloomError"),
    "ConfigError": ("torchloom.errors", "ConfigError"),
    "DataError": ("torchloom.errors", "DataError"),
}
_SUBMODULES = ("data", "models", "config", "tasks", "init", "optim", "train", "errors")

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"torchloom.{name}")
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchloom' has no attribute '{name}'")
