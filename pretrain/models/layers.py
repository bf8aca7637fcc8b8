"""Transformer building blocks shared by every model of the project (word-pooled and baselines):
RoPE self-attention + SwiGLU MLP, pre-norm RMSNorm, with an optional KV cache for generation."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ops import varlen_attention

# The CUDA memory-efficient/flash kernels have a 65535 limit on the grid's batch dimension in some
# torch versions; B*W per-word sequences can exceed it, so attention is run in chunks of this size.
_MAX_SDPA_BATCH = 32768


def rope_angles(seq_len: int, head_dim: int, base: float, device, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq_len, head_dim/2] for positions start..start+seq_len-1, always fp32
    (recomputed per call: tiny, and it keeps precision when the module is cast to bf16)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.outer(torch.arange(start, start + seq_len, device=device, dtype=torch.float32), inv_freq)
    return ang.cos(), ang.sin()


def rope_angles_at(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [len(positions), 1, head_dim/2] for arbitrary positions (packed sequences restart at 0),
    the same fp32 values rope_angles gives; the middle axis broadcasts over heads."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = torch.outer(positions.float(), inv_freq).unsqueeze(1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, head_dim] by position (half-split / GPT-NeoX layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class RMSNorm(nn.Module):
    # Normalizes in fp32 whatever the activation dtype: works the same under autocast (where
    # nn.RMSNorm warns about bf16 input vs fp32 weight) and in a model cast to bf16.
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight.type_as(x)


def sdpa(q, k, v, mask, causal: bool, dropout_p: float = 0.0):
    if q.shape[0] <= _MAX_SDPA_BATCH:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)
    per_sequence = mask is not None and mask.dim() == q.dim() and mask.shape[0] == q.shape[0]
    outs = []
    for i in range(0, q.shape[0], _MAX_SDPA_BATCH):
        s = slice(i, i + _MAX_SDPA_BATCH)  # a mask shared by all sequences (the sliding window) is not sliced
        outs.append(F.scaled_dot_product_attention(
            q[s], k[s], v[s], attn_mask=mask[s] if per_sequence else mask, is_causal=causal, dropout_p=dropout_p))
    return torch.cat(outs)


class KVCache:
    """Keys and values of every layer of one Stack, [N, heads, T, head_dim] each, grown step by step."""

    def __init__(self):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.length = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer == len(self.layers):
            self.layers.append(None)
        if self.layers[layer] is not None:
            pk, pv = self.layers[layer]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.layers[layer] = (k, v)
        return k, v


class Block(nn.Module):
    """Pre-norm transformer block: RoPE self-attention + SwiGLU MLP, RMSNorm. Causal, or
    bidirectional with a boolean key mask [N, 1, 1, T] (True = may be attended to)."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        hidden = round(mlp_ratio * d)
        self.attn_norm = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.mlp_norm = RMSNorm(d)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.mlp_out = nn.Linear(hidden, d, bias=False)
        self.attn_out.is_residual_proj = self.mlp_out.is_residual_proj = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, causal: bool, key_mask=None, cache: KVCache | None = None, layer: int = 0):
        N, T, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(N, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = key_mask
        if cache is not None:
            k, v = cache.extend(layer, k, v)
            past = k.shape[2] - T
            if past and causal:  # new queries see every cached key and the new keys up to themselves
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
                causal = False
        y = sdpa(q, k, v, mask, causal, self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_out(y.transpose(1, 2).reshape(N, T, d)))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.drop(self.mlp_out(F.silu(gate) * up))

    def forward_packed(self, x, rope, cu_seqlens, max_seqlen: int, causal: bool):
        """The same block on sequences packed flat: x [total, d], sequence i = rows cu_seqlens[i]:
        cu_seqlens[i+1]; rope from rope_angles_at; attention through ops.varlen_attention."""
        T, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(T, 3, self.n_heads, d // self.n_heads).unbind(1)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_out(y.reshape(T, d)))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.drop(self.mlp_out(F.silu(gate) * up))


def sliding_window_mask(q_start: int, n_queries: int, n_keys: int, window: int, device) -> torch.Tensor:
    """[n_queries, n_keys] bool: query at absolute position q_start+i sees keys j with q-window < j <= q."""
    q = torch.arange(q_start, q_start + n_queries, device=device).unsqueeze(1)
    k = torch.arange(n_keys, device=device)
    return (k <= q) & (k > q - window)


class Stack(nn.Module):
    """n_layers Blocks + final RMSNorm; the same class serves encoder, backbone and decoder.

    With cond_dim, a conditioning vector per sequence is projected and added to the residual stream
    before every block (one projection per layer): cross-attention to a single key/value computes
    exactly such a projection, since softmax over one key is 1 whatever the query."""

    def __init__(self, d: int, n_layers: int, n_heads: int, mlp_ratio: float, dropout: float, rope_base: float,
                 cond_dim: int | None = None):
        super().__init__()
        if (d // n_heads) % 2:
            raise ValueError(f"head dim {d // n_heads} (d_model={d}, n_heads={n_heads}) must be even for RoPE")
        self.d, self.n_heads, self.mlp_hidden = d, n_heads, round(mlp_ratio * d)
        self.head_dim, self.rope_base = d // n_heads, rope_base
        self.blocks = nn.ModuleList(Block(d, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.cond = None
        if cond_dim is not None:
            self.cond = nn.ModuleList(nn.Linear(cond_dim, d, bias=False) for _ in range(n_layers))
            for proj in self.cond:  # zero at init: the stack starts as the unconditioned one and learns how much
                proj.zero_init = True  # to add (at N(0, 0.02) the condition swamped the byte embeddings)
        self.norm = RMSNorm(d)
        self.checkpoint_activations = False  # set by the trainer (train.activation_checkpointing)

    def _conditioned(self, x, i: int, cond, rows=None):
        if cond is None:
            return x
        added = self.cond[i](cond).to(x.dtype)  # once per sequence, not per position
        return x + (added[rows] if rows is not None else added.unsqueeze(1))

    def forward(self, x, causal: bool, key_mask=None, cache: KVCache | None = None, cond=None,
                window: int | None = None):
        """x [N, T, d]. cond [N, cond_dim] (a Stack built with cond_dim). window: causal attention to the
        last `window` positions only (key_mask is then built here; positions count from the cache's start)."""
        start = cache.length if cache is not None else 0
        if window is not None:
            key_mask = sliding_window_mask(start, x.shape[1], start + x.shape[1], window, x.device)
            causal = False
        rope = rope_angles(x.shape[1], self.head_dim, self.rope_base, x.device, start)
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            x = self._conditioned(x, i, cond)
            if recompute:  # keep only each block's input; its activations are recomputed in backward
                x = torch.utils.checkpoint.checkpoint(block, x, rope, causal, key_mask, use_reentrant=False)
            else:
                x = block(x, rope, causal, key_mask, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def forward_packed(self, x, positions, cu_seqlens, max_seqlen: int, causal: bool, cond=None, cond_rows=None):
        """Packed sequences (see Block.forward_packed); positions [total] = each row's position within its
        sequence (RoPE restarts at 0 for each). max_seqlen bounds the lengths (a static bound: no sync).
        cond [n, cond_dim] per sequence, cond_rows [total] the sequence of each row."""
        rope = rope_angles_at(positions, self.head_dim, self.rope_base)
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            x = self._conditioned(x, i, cond, cond_rows)
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block.forward_packed, x, rope, cu_seqlens, max_seqlen, causal,
                                                      use_reentrant=False)
            else:
                x = block.forward_packed(x, rope, cu_seqlens, max_seqlen, causal)
        return self.norm(x)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> None:
    for m in model.modules():
        if isinstance(m, Stack):
            m.checkpoint_activations = enabled


def init_weights(model: nn.Module, stacks: list[tuple[Stack, int]]) -> None:
    """N(0, 0.02) for linear and embedding weights; residual projections scaled by 1/sqrt(2 n_layers)
    (GPT-2) so the residual stream's variance does not grow with depth; zero where marked zero_init."""
    for stack, n_layers in stacks:
        for m in stack.modules():
            if getattr(m, "is_residual_proj", False):
                m.init_std = 0.02 / (2 * n_layers) ** 0.5
    for m in model.modules():
        if getattr(m, "zero_init", False):
            nn.init.zeros_(m.weight)
        elif isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=getattr(m, "init_std", 0.02))
