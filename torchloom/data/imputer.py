"""The learned imputer: a small denoising autoencoder that fills missing numeric values.

It is trained on the training split only, as part of preprocessing: each step hides a random
share of the values that *are* observed and learns to reconstruct them from the rest, so at
prediction it can fill the values that are really missing from the ones a row has. Its weights
are tiny (a few thousand numbers) and are stored as JSON lists inside `preprocess.json`, so a
run directory stays safe to load (no pickle, no extra file).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DenoisingImputer(nn.Module):
    """An MLP from (values with gaps zeroed, observed mask) to every value.

    Args:
        num_features: numeric columns it reads and fills.
        hidden: units of each of the two hidden layers.
    """

    def __init__(self, num_features: int, hidden: int = 64):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(2 * num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_features),
        )

    def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # values, observed: (batch, num_features); a missing value enters as 0 (the mean after
        # standardizing) and the mask tells the network which zeros are real.
        return self.network(torch.cat([values * observed, observed], dim=1))


def fit_learned_imputer(
    train: np.ndarray,
    *,
    seed: int,
    hidden: int = 64,
    epochs: int = 300,
    mask_rate: float = 0.25,
    batch_size: int = 128,
) -> dict:
    """Train a denoising autoencoder on the training rows (NaN where missing).

    Args:
        train: (num_samples, num_features) float numeric columns of the training split.
        seed: seeds the weights and the random masks (the global torch RNG is left untouched).
        hidden: hidden units.
        epochs: passes over the training rows.
        mask_rate: share of the observed values hidden in each step.
        batch_size: rows per step.

    Returns:
        A JSON-ready dict: the standardization it works in and the weights as nested lists.
    """
    train = np.asarray(train, dtype=np.float64)
    observed = ~np.isnan(train)
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    std[~(std > 1e-12)] = 1.0
    scaled = np.where(observed, (train - mean) / std, 0.0)
    values = torch.tensor(scaled, dtype=torch.float32)  # (num_samples, num_features)
    mask = torch.tensor(observed, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DenoisingImputer(train.shape[1], hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        for _epoch in range(epochs):
            order = torch.randperm(len(values))
            for start in range(0, len(values), batch_size):
                rows = order[start : start + batch_size]
                batch, batch_mask = values[rows], mask[rows]
                # Hide a random share of the observed values; learn to bring them back.
                kept = (torch.rand_like(batch_mask) >= mask_rate).float() * batch_mask
                hidden_values = batch_mask - kept  # 1 where observed but hidden this step
                output = model(batch, kept)
                error = (output - batch) ** 2
                # Mostly the hidden values (the job at prediction), a little the visible ones.
                weight = hidden_values + 0.1 * kept
                loss = (error * weight).sum() / weight.sum().clamp(min=1.0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "hidden": hidden,
        "weights": {name: tensor.tolist() for name, tensor in model.state_dict().items()},
    }


def apply_learned_imputer(fitted: dict, values: np.ndarray) -> np.ndarray:
    """Fill the NaN in `values` (num_samples, num_features) with the imputer's reconstruction.

    Observed values are returned unchanged; only the gaps are filled.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return values
    mean, std = np.asarray(fitted["mean"]), np.asarray(fitted["std"])
    model = DenoisingImputer(values.shape[1], fitted["hidden"])
    state = {name: torch.tensor(weights) for name, weights in fitted["weights"].items()}
    model.load_state_dict(state)
    model.eval()
    scaled = np.where(missing, 0.0, (values - mean) / std)
    with torch.no_grad():
        output = model(
            torch.tensor(scaled, dtype=torch.float32),
            torch.tensor(~missing, dtype=torch.float32),
        ).double()
    filled = output.numpy() * std + mean
    return np.where(missing, filled, values)
