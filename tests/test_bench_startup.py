"""Start-up costs that benchmarks/peers.py found: unsplit data needs no scikit-learn import."""

import subprocess
import sys

import numpy as np
import torch

import torchloom as tl

UNSPLIT = """
import sys
import numpy as np
import torchloom as tl
data = tl.data.from_arrays(np.zeros((20, 3), np.float32), np.arange(20) % 2, val=0.0, test=0.0)
print(len(data.train), "sklearn.model_selection" in sys.modules)
"""


def test_unsplit_data_does_not_import_scikit_learn_model_selection():
    completed = subprocess.run(
        [sys.executable, "-c", UNSPLIT], capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == ["20", "False"]


def test_unsplit_data_keeps_every_row_in_order_and_split_data_still_holds_out():
    features = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    targets = np.arange(50) % 5
    unsplit = tl.data.from_arrays(features, targets, val=0.0, test=0.0)
    assert unsplit.val is None and unsplit.test is None
    assert torch.equal(unsplit.train.features, torch.from_numpy(features))
    assert torch.equal(unsplit.train.targets, torch.from_numpy(targets).long())
    split = tl.data.from_arrays(features, targets, val=0.2, test=0.2)
    assert (len(split.train), len(split.val), len(split.test)) == (30, 10, 10)
    # Stratified: every class keeps its share in each held-out split.
    assert sorted(split.test.targets.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
