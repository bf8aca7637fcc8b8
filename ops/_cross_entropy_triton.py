"""Triton kernels of ops.cross_entropy (imported lazily: only the CUDA fast path and the interpreter
test load them, and Triton decides at decoration time whether a kernel is compiled or interpreted,
from TRITON_INTERPRET)."""
import triton
import triton.language as tl


@triton.jit
def cross_entropy_fwd_kernel(logits_ptr, targets_ptr, loss_ptr, lse_ptr, n_cols, row_stride,
                             ignore_index, BLOCK: tl.constexpr):
    """One program per row: lse = logsumexp(row) in fp32, loss = lse - row[target] (0 when ignored)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    x = tl.load(logits_ptr + row * row_stride + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
    peak = tl.max(x, axis=0)
    lse = peak + tl.log(tl.sum(tl.exp(x - peak), axis=0))
    target = tl.load(targets_ptr + row)
    picked = tl.sum(tl.where(cols == target, x, 0.0), axis=0)
    ignored = target == ignore_index
    tl.store(loss_ptr + row, tl.where(ignored, 0.0, lse - picked))
    tl.store(lse_ptr + row, lse)


@triton.jit
def cross_entropy_bwd_kernel(logits_ptr, targets_ptr, lse_ptr, grad_loss_ptr, grad_ptr, n_cols, row_stride,
                             grad_row_stride, ignore_index, BLOCK: tl.constexpr):
    """One program per row: grad = (softmax(row) - onehot(target)) * grad_loss[row]; 0 when ignored."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    in_row = cols < n_cols
    x = tl.load(logits_ptr + row * row_stride + cols, mask=in_row, other=float("-inf")).to(tl.float32)
    target = tl.load(targets_ptr + row)
    scale = tl.where(target == ignore_index, 0.0, tl.load(grad_loss_ptr + row))
    prob = tl.exp(x - tl.load(lse_ptr + row))
    grad = (prob - tl.where(cols == target, 1.0, 0.0)) * scale
    tl.store(grad_ptr + row * grad_row_stride + cols, grad.to(grad_ptr.dtype.element_ty), mask=in_row)
