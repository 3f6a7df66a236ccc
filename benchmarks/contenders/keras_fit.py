"""Keras 3 on the torch backend: a `keras.Sequential` model, `compile`, `fit`.

`KERAS_BACKEND=torch` is set before the import. Defaults otherwise: the progress bar
(verbose="auto"), `shuffle=True`, Keras's own initializers and its own optimizer
implementation. The model is the same architecture in Keras layers (channels-last images, as
Keras expects). Compiled with the loss only (no extra metrics), as the other contenders.
"""

from __future__ import annotations

import os

import common


def framework_import() -> str:
    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    return keras.__version__


def build_keras_model(workload, data, hidden):
    import keras
    from keras import layers

    classes = common.num_classes(data) if workload.task == "classification" else 1
    if workload.model == "mlp":
        stack = [layers.Dense(width, activation="relu") for width in hidden or [128, 64]]
        return keras.Sequential(
            [keras.Input(data["x"].shape[1:]), layers.Flatten(), *stack, layers.Dense(classes)]
        )
    if workload.model == "lenet":
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(6, 5, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(16, 5, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(120, activation="relu"),
                layers.Dense(84, activation="relu"),
                layers.Dense(classes),
            ]
        )
    return keras.Sequential([keras.Input((32, 1)), layers.LSTM(64), layers.Dense(1)])


def train(workload, data, epochs, timer, options):
    import keras

    class Timestamps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.step_done()

        def on_epoch_end(self, epoch, logs=None):
            timer.epoch_done()

    keras.utils.set_random_seed(common.SEED)
    model = build_keras_model(workload, data, options.get("hidden"))
    features = data["x"]
    if workload.model == "lenet":
        features = features.transpose(0, 2, 3, 1)  # (n, 1, 28, 28) -> (n, 28, 28, 1)
    if workload.task == "classification":
        rate = common.LEARNING_RATE["classification"]
        optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=0.9)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=common.LEARNING_RATE["regression"])
        loss = "mse"
    model.compile(optimizer=optimizer, loss=loss)
    timer.fit_called()
    model.fit(
        features,
        data["y"],
        batch_size=common.BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        callbacks=[Timestamps()],
    )
    timer.fit_returned()


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
