"""Summed cross-entropy over a small vocabulary (the 260 byte symbols), fused in Triton.

Contract of `cross_entropy_sum(logits, targets, ignore_index=-100)`: logits [N, V] (any float dtype,
V <= 65536; rows contiguous in their last dim), targets [N] int; returns the fp32 scalar
sum over rows with targets != ignore_index of logsumexp(logits[row]) - logits[row, target], computed in
fp32 whatever the logits' dtype. Its gradient w.r.t. logits is (softmax - onehot) * grad, 0 on ignored
rows, in the logits' dtype.

Why fused: the reference (F.cross_entropy on logits.float()) materializes an fp32 copy of the bf16
logits and a softmax of the same size; the kernel reads each row once in the forward (keeping only
its logsumexp) and once in the backward, which writes the gradient directly.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ops._dispatch import Impl, use_fast

__all__ = ["cross_entropy_sum", "cross_entropy_sum_reference", "cross_entropy_sum_triton"]


def cross_entropy_sum_reference(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum")


class _TritonCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int):
        from ops import _cross_entropy_triton as kernels
        import triton

        logits = logits if logits.stride(-1) == 1 else logits.contiguous()
        targets = targets.contiguous()
        N, V = logits.shape
        loss = torch.empty(N, dtype=torch.float32, device=logits.device)
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        block = triton.next_power_of_2(V)
        if N:
            kernels.cross_entropy_fwd_kernel[(N,)](logits, targets, loss, lse, V, logits.stride(0), ignore_index,
                                                   BLOCK=block)
        ctx.save_for_backward(logits, targets, lse)
        ctx.ignore_index, ctx.block = ignore_index, block
        return loss.sum()

    @staticmethod
    def backward(ctx, grad_sum):
        from ops import _cross_entropy_triton as kernels

        logits, targets, lse = ctx.saved_tensors
        N, V = logits.shape
        grad = torch.empty_like(logits)
        # d(sum)/d(row loss) = grad_sum for every row: passed as a per-row vector (expand: no copy)
        grad_rows = grad_sum.float().reshape(1).expand(N)
        if N:
            kernels.cross_entropy_bwd_kernel[(N,)](logits, targets, lse, grad_rows.contiguous(), grad, V,
                                                   logits.stride(0), grad.stride(0), ctx.ignore_index,
                                                   BLOCK=ctx.block)
        return grad, None, None


def cross_entropy_sum_triton(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} / targets {tuple(targets.shape)}: expected [N, V] / [N]")
    return _TritonCrossEntropySum.apply(logits, targets, ignore_index)


@functools.cache  # a failed import is not cached by Python: ask once per process
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                      impl: Impl = "auto") -> torch.Tensor:
    """Dispatch (contract in the module docstring): the Triton kernel on CUDA, F.cross_entropy elsewhere."""
    if use_fast(logits, impl) and (impl == "fast" or _triton_available()):
        return cross_entropy_sum_triton(logits, targets, ignore_index)
    return cross_entropy_sum_reference(logits, targets, ignore_index)
