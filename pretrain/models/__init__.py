"""One entry point from a validated `model` config section to the model it describes."""
from __future__ import annotations

import torch.nn as nn

from schema import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """The word-pooled model, or a byte / BPE baseline on the same backbone (model.kind)."""
    if cfg.kind == "word_pooled":
        from pretrain.models.word_pooled import WordPooledLM

        return WordPooledLM(cfg)
    from pretrain.models.token_lm import TokenLM

    return TokenLM(cfg)
