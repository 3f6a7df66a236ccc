"""Episode bookkeeping shared by the algorithms: returns and lengths of the episodes each
environment plays, counted on the steps that are real transitions."""

from __future__ import annotations

import numpy as np


class Episodes:
    """Running return and length per environment, and the episodes finished since `take`."""

    def __init__(self, count: int):
        self.returns = np.zeros(count)
        self.lengths = np.zeros(count, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []
        self.total = 0  # episodes finished over the whole run

    def add(self, rewards: np.ndarray, done: np.ndarray, valid: np.ndarray) -> None:
        """One vector step: `valid` False where the step was an autoreset (no transition)."""
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        for index in np.flatnonzero(done & valid):
            self.finished.append((float(self.returns[index]), int(self.lengths[index])))
            self.returns[index], self.lengths[index] = 0.0, 0
            self.total += 1

    def take(self) -> dict[str, float]:
        """Mean return and length of the episodes finished since the last call (none: {})."""
        if not self.finished:
            return {}
        returns, lengths = zip(*self.finished, strict=True)
        self.finished = []
        return {
            "episode/return": float(np.mean(returns)),
            "episode/length": float(np.mean(lengths)),
            "episode/count": float(self.total),
        }

    def state_dict(self) -> dict:
        return {
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "finished": self.finished,
            "total": self.total,
        }

    def load_state_dict(self, saved: dict) -> None:
        self.returns = np.asarray(saved["returns"], dtype=np.float64)
        self.lengths = np.asarray(saved["lengths"], dtype=np.int64)
        self.finished = [tuple(item) for item in saved["finished"]]  # type: ignore[misc]
        self.total = saved["total"]
