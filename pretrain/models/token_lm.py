"""The baselines: a causal LM over bytes or over BPE tokens, on the word-pooled model's backbone.

Same `Stack` (layers, width, heads, RoPE, SwiGLU) as the word-pooled backbone; only the input
embedding and the output head differ, sized by the shards' vocabulary (bytes: 256 values + the
end-of-document id; BPE: the tokenizer's vocabulary, end-of-document token included).

Batch contract (see `TokenLM.forward`):
  tokens      [B, T] ids; -1 pads a short sample at its end
  token_bytes [B, T] UTF-8 text bytes each token stands for (0 for end-of-document and padding)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ops import cross_entropy_sum
from pretrain.models import flops
from schema import ModelConfig
from pretrain.models.layers import KVCache, Stack, init_weights
from pretrain.models.sampling import pick_next

PAD_TOKEN = -1


class TokenLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError(f"model.kind={cfg.kind} needs model.vocab_size (the trainer fills it in from the shards)")
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone = Stack(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, cfg.rope_base)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_weights(self, [(self.backbone, cfg.n_layers)])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train_flops(self, tokens: torch.Tensor, **_) -> float:
        return flops.token_lm(self, tokens != PAD_TOKEN)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, vocab] of ids [B, T] (no padding): entry t predicts token t+1."""
        return self.head(self.backbone(self.emb(tokens), causal=True))

    def forward(self, tokens, token_bytes, details: bool = False, **_) -> dict[str, torch.Tensor]:
        """The same sums as the word-pooled model: nll_sum over every predicted token (tokens 1..T-1,
        end-of-document ids included), n_text_bytes = the text bytes those tokens stand for, so bits
        per byte = nll_sum / ln 2 / n_text_bytes. Next-word accuracy needs the word splitter, so it is
        scored outside the model (pretrain.evaluation.word_scoring) from `preds` [B, T-1], the teacher-forced
        argmax, returned with details=True; n_words/n_correct are 0 here."""
        valid = tokens != PAD_TOKEN
        logits = self.logits(tokens[:, :-1].clamp(min=0))
        tgt = tokens[:, 1:].masked_fill(~valid[:, 1:], -100)
        nll_sum = cross_entropy_sum(logits.flatten(0, 1), tgt.flatten())  # fp32 inside; fused kernel on CUDA
        n_symbols = valid[:, 1:].sum().float()
        zero = torch.zeros((), dtype=torch.float32, device=tokens.device)
        out = {
            "loss": nll_sum / n_symbols.clamp(min=1.0),
            "nll_sum": nll_sum,
            "n_symbols": n_symbols,
            "n_text_bytes": token_bytes[:, 1:].sum().float(),
            "n_words": zero,
            "n_correct": zero,
        }
        if details:
            out["preds"] = logits.detach().argmax(-1)
        return out

    @torch.no_grad()
    def generate(self, prompt: list[int], max_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_id: int | None = None,
                 window: int | None = None) -> list[int]:
        """Token ids continuing `prompt`, with a KV cache; the context is the last `window` tokens
        (the cache is rebuilt when that window slides)."""
        was_training = self.training
        self.eval()
        dev = self.head.weight.device
        context, out = list(prompt), []
        cache = None
        logits = None
        for _ in range(max_tokens):
            if cache is None:
                cache = KVCache()
                ids = torch.tensor([context[-window:] if window else context], device=dev)
                logits = self.head(self.backbone(self.emb(ids), causal=True, cache=cache)[0, -1]).float()
            nxt = pick_next(logits, temperature, top_k, generator)
            out.append(nxt)
            context.append(nxt)
            if nxt == stop_id:
                break
            if window and len(context) > window:
                cache = None
            else:
                h = self.backbone(self.emb(torch.tensor([[nxt]], device=dev)), causal=True, cache=cache)
                logits = self.head(h[0, -1]).float()
        if was_training:
            self.train()
        return out
