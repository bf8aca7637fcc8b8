"""ops/: every fast path against its plain-PyTorch reference, outputs and gradients.

On CPU: the varlen reference against a per-sequence loop, torch's jagged SDPA (bidirectional; the
causal one has no CPU backend), the cross-entropy against its definition (the Triton kernel through the
Triton interpreter runs in a subprocess: tests/integration/test_ops_triton_interpreter.py). The CUDA
tests run the fast paths as the model uses them (bf16) and are skipped without a GPU.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from ops import cross_entropy_sum, varlen_attention
from ops._dispatch import use_fast
from ops.varlen_attention import varlen_attention_jagged, varlen_attention_reference
from ops_reference import check_cross_entropy

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="fast path runs on CUDA only; no GPU in this session")
LENS = [3, 1, 5, 2, 7]  # word-like: short, uneven, one of length 1


def packed_qkv(lens, heads=2, head_dim=8, lens_k=None, device="cpu", dtype=torch.float32, seed=0, strided=False):
    """Random packed q, k, v and their cu_seqlens; strided: q/k/v as views of one tensor [total, 3, ...]
    (how the model's qkv projection makes them), else contiguous leaves."""
    g = torch.Generator().manual_seed(seed)
    lens_k = lens if lens_k is None else lens_k
    cu = lambda ls: torch.tensor([0, *torch.tensor(ls).cumsum(0).tolist()], device=device)  # noqa: E731
    if strided:
        assert lens_k == lens
        qkv = torch.randn(sum(lens), 3, heads, head_dim, generator=g).to(device, dtype).requires_grad_()
        return (*qkv.unbind(1), cu(lens), cu(lens))
    make = lambda n: torch.randn(n, heads, head_dim, generator=g).to(device, dtype).requires_grad_()  # noqa: E731
    return make(sum(lens)), make(sum(lens_k)), make(sum(lens_k)), cu(lens), cu(lens_k)


def loop_attention(q, k, v, cu_q, cu_k, causal):
    """Ground truth: SDPA on each sequence alone."""
    out = []
    for i in range(len(cu_q) - 1):
        sq, sk = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        y = F.scaled_dot_product_attention(q[sq].transpose(0, 1), k[sk].transpose(0, 1), v[sk].transpose(0, 1),
                                           is_causal=causal)
        out.append(y.transpose(0, 1))
    return torch.cat(out)


def assert_same_with_grads(fn_a, fn_b, inputs, atol=1e-5, rtol=1e-4):
    a, b = fn_a(*inputs), fn_b(*inputs)
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    probe = torch.randn(a.shape, generator=torch.Generator().manual_seed(1)).to(a.device, a.dtype)
    ga = torch.autograd.grad((a * probe).sum(), inputs)
    gb = torch.autograd.grad((b * probe).sum(), inputs)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


# ---- varlen attention ------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_varlen_reference_equals_per_sequence_attention(causal):
    q, k, v, cu, _ = packed_qkv(LENS)
    assert_same_with_grads(lambda q, k, v: varlen_attention_reference(q, k, v, cu, causal=causal),
                           lambda q, k, v: loop_attention(q, k, v, cu, cu, causal), (q, k, v))


def test_varlen_reference_cross_attention():
    # latent pooling: one query per word over that word's keys
    q, k, v, cu_q, cu_k = packed_qkv([1] * len(LENS), lens_k=LENS)
    assert_same_with_grads(lambda q, k, v: varlen_attention_reference(q, k, v, cu_q, cu_k),
                           lambda q, k, v: loop_attention(q, k, v, cu_q, cu_k, False), (q, k, v))
    with pytest.raises(ValueError, match="causal"):
        varlen_attention_reference(q, k, v, cu_q, cu_k, causal=True)


def test_jagged_sdpa_on_cpu_bidirectional():
    q, k, v, cu, _ = packed_qkv(LENS, strided=True)
    assert_same_with_grads(lambda q, k, v: varlen_attention_jagged(q, k, v, cu, max(LENS)),
                           lambda q, k, v: varlen_attention_reference(q, k, v, cu), (q, k, v))
    q, k, v, cu_q, cu_k = packed_qkv([1] * len(LENS), lens_k=LENS)
    assert_same_with_grads(lambda q, k, v: varlen_attention_jagged(q, k, v, cu_q, 1, cu_k, max(LENS)),
                           lambda q, k, v: varlen_attention_reference(q, k, v, cu_q, cu_k), (q, k, v))


@pytest.mark.skipif(not CUDA, reason="torch 2.14's jagged SDPA has no CPU backend for is_causal=True (its math "
                                     "backend refuses causal, then it probes cuDNN, which needs a CUDA driver)")
def test_jagged_sdpa_causal():
    q, k, v, cu, _ = packed_qkv(LENS, device="cuda")
    assert_same_with_grads(lambda q, k, v: varlen_attention_jagged(q, k, v, cu, max(LENS), causal=True),
                           lambda q, k, v: varlen_attention_reference(q, k, v, cu, causal=True), (q, k, v),
                           atol=2e-3, rtol=2e-3)


@needs_cuda
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_varlen_fast_path_on_cuda(causal, dtype):
    lens = [int(x) for x in torch.randint(1, 33, (3000,), generator=torch.Generator().manual_seed(0))]
    q, k, v, cu, _ = packed_qkv(lens, heads=4, head_dim=64, device="cuda", dtype=dtype, strided=True)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    assert_same_with_grads(lambda q, k, v: varlen_attention(q, k, v, cu, 32, causal, impl="fast"),
                           # the reference in fp32 (cast back): bf16 rounding is the fast path's only error
                           lambda q, k, v: varlen_attention(q.float(), k.float(), v.float(), cu, 32, causal,
                                                            impl="reference").to(dtype),
                           (q, k, v), atol=tol, rtol=tol)


def test_dispatch_rule(monkeypatch):
    cpu = torch.zeros(1)
    assert not use_fast(cpu, "auto") and use_fast(cpu, "fast") and not use_fast(cpu, "reference")
    with pytest.raises(ValueError):
        use_fast(cpu, "fastest")
    if CUDA:
        assert use_fast(cpu.cuda(), "auto")
        monkeypatch.setenv("WORDPOOL_OPS", "reference")
        assert not use_fast(cpu.cuda(), "auto")


# ---- fused cross-entropy -----------------------------------------------------------------------------
def test_cross_entropy_reference_on_cpu():
    check_cross_entropy("auto", "cpu", torch.float32, atol=1e-6, rtol=1e-6)
    check_cross_entropy("reference", "cpu", torch.bfloat16, atol=1e-2, rtol=1e-2)


def test_cross_entropy_known_values():
    # two equal logits: ln 2 per row; logits (0, ln 3): -ln(1/4) for target 0, -ln(3/4) for target 1
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [0.0, math.log(3.0)], [5.0, -5.0]], requires_grad=True)
    targets = torch.tensor([1, 0, 1, -100])
    out = cross_entropy_sum(logits, targets)
    assert out.item() == pytest.approx(math.log(2) + math.log(4) + math.log(4 / 3), rel=1e-6)
    out.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.5, -0.5], [-0.75, 0.75], [0.25, -0.25], [0.0, 0.0]]))
    assert cross_entropy_sum(logits, torch.full((4,), -100)).item() == 0.0  # every row ignored


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_cross_entropy_on_cuda(dtype):
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    check_cross_entropy("fast", "cuda", dtype, atol=tol, rtol=tol)
