"""The process group and the device: what every entry point that runs the model under DeepSpeed shares.

Pure set-up, no training: the trainer, `wordpool bench train` and `wordpool compare` (which starts
single-rank runs without torchrun) use the same rules for the rank variables, bf16 and the backend.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def uses_bf16(precision: str, on_gpu: bool) -> bool:
    """train.precision: auto means bf16 on GPU and fp32 on CPU (CPU bf16 matmuls are slow and inexact)."""
    return precision == "bf16" or (precision == "auto" and on_gpu)


def backend(on_gpu: bool) -> str:
    return "nccl" if on_gpu else "gloo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_rank_env(port: int | None = None) -> dict[str, str]:
    """The variables torchrun would set for one local rank (mosaicml-streaming reads LOCAL_WORLD_SIZE too)."""
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port or free_port())}


def init_single_rank() -> None:
    """A one-rank process group in this process, for tools that run the engine without torchrun."""
    if dist.is_initialized():
        return
    for key, value in single_rank_env(int(os.environ.get("MASTER_PORT", 0)) or None).items():
        os.environ.setdefault(key, value)
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend(torch.cuda.is_available()))


def die_with_parent() -> None:
    """torchrun starts workers in their own session: if the agent is SIGKILLed they would keep training
    (and writing checkpoints) beside the restarted job. Ask Linux to kill this rank with its parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def init_process_group(backend_name: str) -> None:
    """Under torchrun the ranks meet in the agent's store, which outlives a restart of the worker group, and
    torch.distributed's env:// set-up puts no per-restart prefix on its keys: a restarted rank could read a
    dead predecessor's gloo address (the chaos test saw "Connection refused" loops). So rank 0 hosts a fresh
    store for the process group and publishes its port in the agent's store; the others connect, and a
    port that refuses them was a dead attempt's: they read the key again. (torchrun's restart count cannot
    name the attempt: each node counts its own restarts.)"""
    if dist.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host = os.environ["MASTER_ADDR"]  # the node of global rank 0
    agent = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), world, is_master=False)
    if rank == 0:
        store = dist.TCPStore(host, 0, world, is_master=True, wait_for_workers=False)
        agent.set("wordpool/pg_store_port", str(store.port))
    else:
        while True:
            port = int(agent.get("wordpool/pg_store_port"))  # waits until some attempt's rank 0 wrote it
            try:
                store = dist.TCPStore(host, port, world, is_master=False, timeout=timedelta(seconds=2))
                break
            except (RuntimeError, OSError):
                time.sleep(0.5)  # a dead attempt's port: the new rank 0 has not published yet
    dist.init_process_group(backend_name, store=store, rank=rank, world_size=world)
