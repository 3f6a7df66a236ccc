"""The tutorial's loop: TensorDataset + DataLoader(shuffle=True), `running_loss += loss.item()`.

Option `workers=N` sets `num_workers` (0 by default; the tutorial uses 2 for CIFAR-10).
"""

from __future__ import annotations

import common


def framework_import() -> str:
    import torch

    return torch.__version__


def train(workload, data, epochs, timer, options):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    net = common.build_torch_model(workload, data, options.get("hidden"))
    timer.fit_called()
    dataset = TensorDataset(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    loader = DataLoader(
        dataset,
        batch_size=common.BATCH_SIZE,
        shuffle=True,
        num_workers=int(options.get("workers", 0)),
    )
    criterion, optimizer = common.torch_loss_and_optimizer(workload, net)
    for _epoch in range(epochs):
        running_loss = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            timer.step_done()
            running_loss += loss.item()  # the tutorial prints it every 2,000 mini-batches
        timer.epoch_done()
    timer.fit_returned()
    return {"weights_checksum": common.weights_checksum(net)}


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
