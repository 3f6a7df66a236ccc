"""Data-parallel training under `torchrun`: PyTorch's own `torch.distributed` and DDP.

`torchrun --nproc-per-node N -m torchloom train CONFIG` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in their environment. `World.from_environment()` reads them;
without torchrun it returns a single-process world and nothing here runs, so a plain `fit` has no
distributed code in its path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from torchloom.errors import TorchloomError


@dataclass
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0..size-1; rank 0 writes the run directory, the logs and the checkpoints.
        size: the number of processes (WORLD_SIZE).
        local_rank: the rank on this host, which picks its GPU.
        restart: how many times torchrun restarted the job (TORCHELASTIC_RESTART_COUNT).
        launch_id: torchrun's rendezvous run id, the same for every restart of one launch.
        owns_group: torchloom created the process group (and so destroys it at the end).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restart: int = 0
    launch_id: str = ""
    owns_group: bool = False

    @classmethod
    def from_environment(cls) -> World:
        """The world torchrun describes in the environment, or a single process."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(
            rank=int(os.environ["RANK"]),
            size=size,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            launch_id=os.environ.get("TORCHELASTIC_RUN_ID", ""),
        )

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device for this rank: its own GPU (cuda:LOCAL_RANK) or the CPU."""
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device, timeout_seconds: float) -> None:
        """Join the process group (NCCL on GPUs, gloo on CPU) unless the user already did.

        The timeout bounds every collective: a rank stuck waiting for a peer that died gives up
        after it instead of PyTorch's default 30 minutes (torchrun usually ends the job sooner,
        when it sees the failed process).
        """
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if dist.is_initialized():
            if dist.get_world_size() != self.size:
                raise TorchloomError(
                    f"the process group has {dist.get_world_size()} processes but WORLD_SIZE is "
                    f"{self.size}. Launch with torchrun and let torchloom create the group."
                )
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_seconds)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and self.restart:
            # torchrun shares its rendezvous store with the workers, and after a restart the
            # previous attempt's addresses are still in it: the new processes would dial the
            # dead ones (pytorch/pytorch#135712). A prefix per attempt keeps the keys apart.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                self.size,
                is_master=False,
                timeout=timeout,
            )
            dist.init_process_group(
                backend,
                store=dist.PrefixStore(f"torchloom/attempt-{self.restart}", store),
                rank=self.rank,
                world_size=self.size,
                timeout=timeout,
            )
        else:
            dist.init_process_group(backend, timeout=timeout)
        self.owns_group = True

    def stop(self) -> None:
        """Leave the process group torchloom created (a no-op otherwise)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `values` over every rank (the input itself in one process)."""
        if not self.active:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values

    def wrap(self, model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
        """The model DDP trains: gradients are averaged across ranks during backward. DDP's
        constructor broadcasts rank 0's parameters, so every rank starts from the same weights.

        With `sync_batchnorm`, batch norm layers are converted in place (same parameter names,
        so the saved weights load into the plain model) to compute statistics over the global
        batch; PyTorch's SyncBatchNorm runs on GPUs only.
        """
        from torch.nn.parallel import DistributedDataParallel

        if sync_batchnorm:
            if device.type != "cuda":
                raise TorchloomError(
                    "trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA GPUs only "
                    f"(device is {device.type}). Set sync_batchnorm: false on CPU."
                )
            if isinstance(model, nn.modules.batchnorm._BatchNorm):
                raise TorchloomError(
                    "trainer.sync_batchnorm: the model is a bare BatchNorm layer; wrap it in a "
                    "module or turn sync_batchnorm off."
                )
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def share_path(self, path: Path | None) -> Path | None:
        """Rank 0's `path` on every rank (sent as bytes in a tensor: nothing is pickled)."""
        if not self.active:
            return path
        device = torch.device("cuda", self.local_rank) if _nccl() else torch.device("cpu")
        encoded = str(path).encode() if path is not None else b""
        length = torch.tensor([len(encoded)], dtype=torch.int64, device=device)
        dist.broadcast(length, src=0)
        buffer = torch.zeros(int(length), dtype=torch.uint8, device=device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(encoded), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        text = bytes(buffer.cpu().tolist()).decode()
        return Path(text) if text else None

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _nccl() -> bool:
    return dist.is_initialized() and dist.get_backend() == "nccl"


def launch_record(world: World) -> dict:
    """What rank 0 writes to `launch.json`: how the run was started, to resume it on restart."""
    return {"world_size": world.size, "launch_id": world.launch_id}
