"""Attention over many short sequences packed flat (cu_seqlens), without padding them.

The per-word encoder/decoder stacks attend within each word only; packing the words' positions flat
and giving the kernel the sequence boundaries avoids both padding every word to the longest one and
an explicit mask (which keeps SDPA off its flash kernel; docs/ARCHITECTURE.md, "Per-word stacks").

Contract of `varlen_attention(q, k, v, cu_seqlens_q, max_seqlen_q, causal, ...)`:
  q [total_q, heads, head_dim], k/v [total_k, heads, head_dim]: sequence i occupies rows
  cu_seqlens_q[i]:cu_seqlens_q[i+1] of q (cu_seqlens_k for k/v; default: the same as q's);
  cu_seqlens_* int [n+1], starting at 0, nondecreasing, every sequence at least 1 long (a length-0
  sequence is not supported by the fused kernels). max_seqlen_* (Python ints) bound the lengths from
  above: the fused kernels size their grids with them, so passing a static bound avoids a device sync.
  causal=True requires q and k/v to share their boundaries (self-attention): query j of a sequence
  sees its keys 0..j. Softmax scale 1/sqrt(head_dim). Returns [total_q, heads, head_dim] in q's dtype.

Paths: "fast" (CUDA) = flash_attn's flash_attn_varlen_func when importable, else torch's nested
jagged-layout SDPA (dispatches to the flash / memory-efficient varlen kernels); "reference" = pad each
sequence to the longest one, SDPA with a key mask (and causal mask), unpad. Under torch.compile the
reference pads to max_seqlen instead (the longest sequence is data-dependent: reading it would be a
host sync and a graph break); the result is the same.
"""
from __future__ import annotations

import functools
import torch
import torch.nn.functional as F

from ops._dispatch import Impl, use_fast

__all__ = ["varlen_attention", "varlen_attention_reference", "varlen_attention_jagged"]


def _padding_index(cu_seqlens: torch.Tensor, total: int,
                   max_seqlen: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(real [n, T] bool: True where padded position (seq, t) holds a real row; at [total]: each packed
    row's index in the flattened [n*T] padding; T). T = the longest sequence, or max_seqlen under
    torch.compile (see the module docstring)."""
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    if max_seqlen is not None and torch.compiler.is_compiling():
        longest = max_seqlen
    else:
        longest = int(lens.max()) if lens.numel() else 0
    row = torch.arange(total, device=cu.device)
    seq = torch.searchsorted(cu[1:], row, right=True)  # rows are packed in (sequence, position) order
    return torch.arange(longest, device=cu.device) < lens.unsqueeze(1), seq * longest + row - cu[seq], longest


def varlen_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k=None, causal: bool = False,
                               dropout_p: float = 0.0, max_seqlen_q: int | None = None,
                               max_seqlen_k: int | None = None) -> torch.Tensor:
    """Plain PyTorch: pad per sequence, masked SDPA, unpad (see the module's contract)."""
    if cu_seqlens_k is None:
        cu_seqlens_k, max_seqlen_k = cu_seqlens_q, max_seqlen_q
    q_real, q_at, Tq = _padding_index(cu_seqlens_q, q.shape[0], max_seqlen_q)
    k_real, k_at, Tk = (q_real, q_at, Tq) if cu_seqlens_k is cu_seqlens_q else \
        _padding_index(cu_seqlens_k, k.shape[0], max_seqlen_k)
    if causal and cu_seqlens_k is not cu_seqlens_q and not torch.equal(cu_seqlens_k, cu_seqlens_q):
        raise ValueError("causal varlen attention needs the same boundaries for queries and keys")
    n, H, D = q_real.shape[0], q.shape[1], q.shape[2]

    def pad(x, at, T):
        return x.new_zeros(n * T, H, D).index_copy(0, at, x).view(n, T, H, D).transpose(1, 2)

    mask = k_real[:, None, None, :]
    if causal:
        mask = mask & torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril()
    y = F.scaled_dot_product_attention(pad(q, q_at, Tq), pad(k, k_at, Tk), pad(v, k_at, Tk),
                                       attn_mask=mask, dropout_p=dropout_p)
    return y.transpose(1, 2).reshape(n * Tq, H, D)[q_at]


def varlen_attention_jagged(q, k, v, cu_seqlens_q, max_seqlen_q: int, cu_seqlens_k=None,
                            max_seqlen_k: int | None = None, causal: bool = False,
                            dropout_p: float = 0.0) -> torch.Tensor:
    """torch's nested jagged-layout SDPA (same contract). On CUDA it runs the flash/memory-efficient
    varlen kernels; on CPU torch 2.14 serves only causal=False (through its math backend, one sequence
    at a time: correct but slow)."""
    if cu_seqlens_k is None:
        cu_seqlens_k, max_seqlen_k = cu_seqlens_q, max_seqlen_q

    def jagged(x, offsets, max_seqlen):  # [total, H, D] -> [n, H, (T), D]
        # every backend needs contiguous values (a q/k/v unbound from one qkv projection is a strided view);
        # min/max_seqlen given so that choosing a kernel needs no device sync
        return torch.nested.nested_tensor_from_jagged(x.contiguous(), offsets.long(), min_seqlen=1,
                                                      max_seqlen=max_seqlen).transpose(1, 2)

    y = F.scaled_dot_product_attention(jagged(q, cu_seqlens_q, max_seqlen_q), jagged(k, cu_seqlens_k, max_seqlen_k),
                                       jagged(v, cu_seqlens_k, max_seqlen_k), is_causal=causal, dropout_p=dropout_p)
    return y.transpose(1, 2).values()


@functools.cache  # a failed import is not cached by Python: ask once per process
def _flash_attn_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def varlen_attention(q, k, v, cu_seqlens_q, max_seqlen_q: int, causal: bool, cu_seqlens_k=None,
                     max_seqlen_k: int | None = None, dropout_p: float = 0.0, impl: Impl = "auto") -> torch.Tensor:
    """Dispatch (see the module docstring for the contract): fast path on CUDA, reference elsewhere."""
    if not use_fast(q, impl):
        return varlen_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, dropout_p, max_seqlen_q,
                                          max_seqlen_k)
    flash = _flash_attn_varlen() if q.dtype in (torch.float16, torch.bfloat16) else None
    if flash is not None:
        if cu_seqlens_k is None:
            cu_seqlens_k, max_seqlen_k = cu_seqlens_q, max_seqlen_q
        return flash(q, k, v, cu_seqlens_q.int(), cu_seqlens_k.int(), max_seqlen_q, max_seqlen_k,
                     dropout_p=dropout_p, causal=causal)
    return varlen_attention_jagged(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k, causal, dropout_p)
