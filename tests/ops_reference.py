"""The cross-entropy check shared by tests/unit/ops/test_ops.py and the Triton-interpreter subprocess of
tests/integration/test_ops_triton_interpreter.py: loss and gradient against a computation written out here
(float64 log-softmax, gradient softmax - one-hot), independent of torch's F.cross_entropy, which the
reference path of ops.cross_entropy_sum is."""
import torch

from ops import cross_entropy_sum


def ce_inputs(n=37, vocab=260, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(n, vocab, generator=g)).to(device, dtype).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    targets[::5] = -100  # ignored rows
    return logits, targets


def manual_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100):
    """(summed loss, its gradient w.r.t. logits), in float64, from the definitions."""
    x = logits.detach().double().cpu()
    t = targets.cpu()
    keep = (t != ignore_index).double()
    safe = t.clamp(min=0)
    log_probs = x - torch.logsumexp(x, dim=-1, keepdim=True)
    loss = -(log_probs.gather(1, safe[:, None])[:, 0] * keep).sum()
    grad = (log_probs.exp() - torch.nn.functional.one_hot(safe, x.shape[1]).double()) * keep[:, None]
    return loss, grad


def check_cross_entropy(impl, device, dtype, atol, rtol, n=37):
    logits, targets = ce_inputs(n, device=device, dtype=dtype)
    out = cross_entropy_sum(logits, targets, impl=impl)
    loss, grad = manual_cross_entropy(logits, targets)
    assert out.dtype == torch.float32 and out.dim() == 0
    torch.testing.assert_close(out.double().cpu(), loss, atol=atol * n, rtol=rtol)
    (out * 0.5).backward()
    assert logits.grad.dtype == dtype
    torch.testing.assert_close(logits.grad.double().cpu(), 0.5 * grad, atol=atol, rtol=rtol)
    assert not logits.grad[::5].any()  # ignored rows get no gradient
