"""PyTorch Lightning: a LightningModule and `Trainer.fit`, as Lightning's docs show.

Defaults: progress bar, logger (TensorBoard when installed, else CSV), checkpointing and model
summary on, as `Trainer()` gives them; `default_root_dir` is a temporary folder. Option
`quiet=1`: `enable_progress_bar=False, logger=False, enable_checkpointing=False,
enable_model_summary=False`. The data goes through TensorDataset + DataLoader(shuffle=True).
"""

from __future__ import annotations

import logging
import tempfile
import warnings

import common


def framework_import() -> str:
    import lightning

    return lightning.__version__


def train(workload, data, epochs, timer, options):
    import lightning as L  # the name Lightning's docs use
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.loss_function, _ = common.torch_loss_and_optimizer(workload, net)

        def training_step(self, batch, batch_index):
            inputs, targets = batch
            loss = self.loss_function(self.net(inputs), targets)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return common.torch_loss_and_optimizer(workload, self.net)[1]

    class Timestamps(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
            timer.step_done()

        def on_train_epoch_end(self, trainer, module):
            timer.epoch_done()

    # Lightning's advice to raise num_workers and its info lines go to the log, not the table.
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    module = Module(common.build_torch_model(workload, data, options.get("hidden")))
    dataset = TensorDataset(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    loader = DataLoader(dataset, batch_size=common.BATCH_SIZE, shuffle=True)
    quiet = options.get("quiet") == "1"
    with tempfile.TemporaryDirectory(prefix="lightning-bench-") as root:
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            default_root_dir=root,
            callbacks=[Timestamps()],
            **(
                {
                    "enable_progress_bar": False,
                    "logger": False,
                    "enable_checkpointing": False,
                    "enable_model_summary": False,
                }
                if quiet
                else {}
            ),
        )
        timer.fit_called()
        trainer.fit(module, loader)
        timer.fit_returned()
    return {"weights_checksum": common.weights_checksum(module.net)}


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
