"""`torchloom.fit` with the defaults a user gets, plus a run directory (a temporary one).

Progress bar on, metrics.jsonl and TensorBoard events, checkpoints (at most one per 30 s of
epochs, and at the end), the final model and report. Options: `progress=0`, `output=0` (no run
directory: nothing written), `compile=1`, `terminal=1` (rich takes the output for a terminal, as
at a user's prompt, and draws its live progress bar; the output is a pipe here, which
`peers.py` reads and drops).
"""

from __future__ import annotations

import os
import tempfile

import common


def framework_import() -> str:
    import torchloom
    import torchloom.api  # `torchloom` alone is lazy; fit() needs this

    return torchloom.__version__


def train(workload, data, epochs, timer, options):
    import torchloom as tl

    class Timestamps(tl.Callback):
        def on_batch_end(self, state):
            timer.step_done()

        def on_epoch_end(self, state):
            timer.epoch_done()

    if options.get("terminal") == "1":
        os.environ["TTY_COMPATIBLE"] = "1"  # rich: a terminal, so the live bar is drawn
    model = common.build_torch_model(workload, data, options.get("hidden"))
    classification = workload.task == "classification"
    with tempfile.TemporaryDirectory(prefix="torchloom-bench-") as run_root:
        timer.fit_called()
        # The user hands over their arrays; from_arrays is part of what `fit` costs them.
        dataset = tl.data.from_arrays(data["x"], data["y"], val=0.0, test=0.0)
        run = tl.fit(
            model,
            dataset,
            loss="cross_entropy" if classification else "mse",
            optimizer={"name": "sgd", "lr": common.LEARNING_RATE["classification"], "momentum": 0.9}
            if classification
            else {"name": "adam", "lr": common.LEARNING_RATE["regression"]},
            epochs=epochs,
            batch_size=common.BATCH_SIZE,
            seed=common.SEED,
            progress=options.get("progress", "1") == "1",
            output_dir=run_root if options.get("output", "1") == "1" else None,
            compile=options.get("compile") == "1",
            callbacks=[Timestamps()],
        )
        timer.fit_returned()
        run.wait()  # the report, drawn after fit returned, before its folder is removed
    return {"weights_checksum": common.weights_checksum(run.model)}


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
