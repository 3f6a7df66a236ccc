"""The lean hand-written loop: the baseline every ratio is measured against.

In-memory tensors, one seeded permutation per epoch, contiguous slices, no `.item()` per step:
what a careful user writes, and the computation `torchloom.fit` does (same batches, same
weights at the end). Options: `compile=1` wraps the model in `torch.compile`; `foreach=1`
uses the multi-tensor optimizer kernels; `channels_last=1` stores images and convolution
weights channels-last.
"""

from __future__ import annotations

import common


def framework_import() -> str:
    import torch

    return torch.__version__


def train(workload, data, epochs, timer, options):
    import torch

    model = common.build_torch_model(workload, data, options.get("hidden"))
    timer.fit_called()  # the model is built before, as for every contender
    features = torch.from_numpy(data["x"])
    targets = torch.from_numpy(data["y"])
    if options.get("channels_last") == "1" and features.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        features = features.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if options.get("compile") == "1" else model
    loss_function, optimizer = common.torch_loss_and_optimizer(workload, model)
    if options.get("foreach") == "1":
        for group in optimizer.param_groups:
            group["foreach"] = True
    # One generator for the run, one draw per epoch, as torchloom's BatchLoader does.
    generator = torch.Generator().manual_seed(common.SEED)
    num_samples = len(features)
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(num_samples, generator=generator)
        shuffled_features, shuffled_targets = features[order], targets[order]  # one gather
        for start in range(0, num_samples, common.BATCH_SIZE):
            inputs = shuffled_features[start : start + common.BATCH_SIZE]  # a view
            batch_targets = shuffled_targets[start : start + common.BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(forward(inputs), batch_targets)
            loss.backward()
            optimizer.step()
            timer.step_done()
        timer.epoch_done()
    timer.fit_returned()
    return {"weights_checksum": common.weights_checksum(model)}


if __name__ == "__main__":
    raise SystemExit(common.main(train, framework_import))
