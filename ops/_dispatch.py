"""The one rule every op uses to choose between its fast path and its reference."""
from __future__ import annotations

import os
from typing import Literal

import torch

Impl = Literal["auto", "reference", "fast"]


def use_fast(x: torch.Tensor, impl: Impl) -> bool:
    """True for impl="fast"; for "auto": on CUDA tensors unless WORDPOOL_OPS=reference."""
    if impl not in ("auto", "reference", "fast"):
        raise ValueError(f"impl={impl!r}: expected auto, reference or fast")
    if impl != "auto":
        return impl == "fast"
    return x.is_cuda and os.environ.get("WORDPOOL_OPS", "") != "reference"
