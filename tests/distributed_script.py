"""Trains digits under torchrun for tests/test_distributed.py; a fault can be injected.

    torchrun --nproc-per-node 2 tests/distributed_script.py OUT_DIR BATCH_SIZE [FAULT]

FAULT is "raise" (rank 1 raises at step 3), "kill" (rank 1 SIGKILLs itself at step 3) or
"kill-once" (rank 1 SIGKILLs itself at step 7 on the first attempt only, after the checkpoint at
step 5). Writes the run directory under OUT_DIR; rank 0 prints "RUN_DIR <path>" at the end.
With STEPS_LOG set, each rank appends "<restarted 0|1> <step>" for every step it trains to
STEPS_LOG.<rank>.
"""

import os
import signal
import sys

import torchloom as tl
from torchloom.train.callbacks import Callback


class Fault(Callback):
    def __init__(self, kind: str):
        self.kind = kind

    def on_batch_end(self, state) -> None:
        restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"
        if os.environ.get("STEPS_LOG"):  # which attempt trained which step, on every rank
            with open(f"{os.environ['STEPS_LOG']}.{os.environ['RANK']}", "a") as file:
                file.write(f"{int(restarted)} {state.step}\n")
        if os.environ["RANK"] != "1":
            return
        if self.kind == "raise" and state.step == 3:
            raise RuntimeError("injected failure on rank 1 at step 3")
        if self.kind == "kill" and state.step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "kill-once" and state.step == 7 and not restarted:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    out_dir, batch_size = sys.argv[1], int(sys.argv[2])
    fault = sys.argv[3] if len(sys.argv) > 3 else None
    run = tl.fit_config(
        {
            "trainer": {
                "epochs": 1,
                "batch_size": batch_size,
                "progress": False,
                "diagnostics_every": 0,
            },
            "output": {"dir": out_dir, "checkpoint_every_steps": 5, "tensorboard": False},
        },
        callbacks=[Fault(fault)] if fault else [],
    )
    if os.environ.get("RANK", "0") == "0":
        print("RUN_DIR", run.dir, flush=True)


if __name__ == "__main__":
    main()
