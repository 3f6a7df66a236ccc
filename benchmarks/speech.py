"""Speech digits: accuracy on held-out voices, and across synthesizers.

`examples/speech_digits.yaml` as shipped (all 52 voices, 5 variants: 2,600 clips; audio_cnn,
Adam 0.003 with cosine decay, 15 epochs, batch 64), for each `--seeds` seed (which also draws
the held-out voices):

    voice     val and test hold out whole voices (10% and 20% of them): no test voice is heard
              in training. Reported: test accuracy, the accuracy on each engine's test voices,
              the test confusion matrix (rows: the word said) and seconds of training.
    engine    `data.split=engine`: trained on espeak-ng's 48 voices only (5 held out for val),
              tested on flite's 4: another synthesizer, never heard. The honest generalization
              number.

Then one `--recurrent` run of a bidirectional GRU over the frames (seed 0, voice split), the
recurrent models' line. The clips are rendered once into `--cache` (default the user's cache).

Usage:
    python benchmarks/speech.py [--seeds 0 1 2] [--epochs 15] [--cache DIR] [--no-recurrent]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tests/conftest.py

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import torchloom as tl

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "speech_digits.yaml"


def measure(overrides: list[str]) -> dict:
    """One run of the example with `overrides`: test accuracy overall and per engine."""
    from torchloom.data import speech

    started = time.perf_counter()
    run = tl.fit_config(EXAMPLE, [*overrides, "output.dir=null", "trainer.progress=false"])
    seconds = time.perf_counter() - started
    test = run.data.test
    predicted = run.predict(test.features, preprocessed=True)["class"]
    targets = test.targets.cpu().numpy()
    correct = predicted == targets
    # The report's confusion matrix, as numbers: rows are the words said.
    confusion = np.zeros((len(run.preprocess.classes),) * 2, dtype=int)
    np.add.at(confusion, (targets, predicted), 1)
    voices = set(run.preprocess.extra["groups"]["test"])
    made = speech.recipes(speech.DIGITS, run.config.data.model_extra.get("variants", 5))
    engines = np.asarray([r.engine for r in made if r.speaker in voices])  # the split's order
    return {
        "overrides": overrides,
        "test_accuracy": float(correct.mean()),
        "by_engine": {e: float(correct[engines == e].mean()) for e in sorted(set(engines))},
        "test_voices": sorted(voices),
        "confusion": confusion.tolist(),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cache", default=None, help="where the clips are rendered")
    parser.add_argument("--no-recurrent", action="store_true", help="skip the GRU run")
    args = parser.parse_args()
    common = [f"trainer.epochs={args.epochs}"]
    common += [f"data.cache={args.cache}"] if args.cache else []
    results: dict[str, list[dict]] = {"voice": [], "engine": []}
    for seed in args.seeds:
        for split in results:
            result = measure([*common, f"trainer.seed={seed}", f"data.split={split}"])
            results[split].append(result)
            print(json.dumps(result), flush=True)
    if not args.no_recurrent:
        gru = ["model={name: gru, hidden: 64, bidirectional: true}", "trainer.clip_norm=1.0"]
        print(json.dumps(measure([*common, "trainer.seed=0", "data.split=voice", *gru])))
    for split, runs in results.items():
        accuracies = [run["test_accuracy"] for run in runs]
        print(
            f"{split}: test accuracy {', '.join(f'{a:.3f}' for a in accuracies)} (seeds "
            f"{', '.join(map(str, args.seeds))}; median {statistics.median(accuracies):.3f})"
        )


if __name__ == "__main__":
    main()
