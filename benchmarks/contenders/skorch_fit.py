"""skorch: `NeuralNetClassifier` / `NeuralNetRegressor(...).fit(X, y)` with `train_split=None`.

Its defaults otherwise: the per-epoch table printed (verbose=1), the train loss recorded per
batch, shuffling by its DataLoader (`iterator_train__shuffle=True`, as its docs advise).
"""

from __future__ import annotations

import common


def framework_import() -> str:
    import skorch

    return skorch.__version__


def train(workload, data, epochs, timer, options):
    import torch
    from skorch import NeuralNetClassifier, NeuralNetRegressor
    from skorch.callbacks import Callback
    from torch import nn

    class Timestamps(Callback):
        def on_batch_end(self, net, batch=None, training=None, **kwargs):
            if training:
                timer.step_done()

        def on_epoch_end(self, net, **kwargs):
            timer.epoch_done()

    classification = workload.task == "classification"
    module = common.build_torch_model(workload, data, options.get("hidden"))
    net_class = NeuralNetClassifier if classification else NeuralNetRegressor
    net = net_class(
        module,
        criterion=nn.CrossEntropyLoss if classification else nn.MSELoss,
        optimizer=torch.optim.SGD if classification else torch.optim.Adam,
        lr=common.LEARNING_RATE[workload.task],
        **({"optimizer__momentum": 0.9} if classification else {}),
        max_epochs=epochs,
        batch_size=common.BATCH_SIZE,
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[Timestamps()],
    )
    timer.fit_called()
    net.fit(data["x"], data["y"])
    timer.fit_returned()
    return {"weights_checksum": common.weights_checksum(net.module_)}


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
