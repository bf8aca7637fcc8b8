"""Schema of the `model` section: the word-pooled model and its baselines."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from schema.base import Strict

if TYPE_CHECKING:
    from schema.data import DataConfig

TOKENIZER_OF = {"word_pooled": "words", "bytes": "bytes", "bpe": "bpe"}  # model.kind -> data.tokenizer it reads


def derived_model_sizes(kind: str, data: "DataConfig") -> dict[str, tuple[str, int]]:
    """The model fields that are facts of the data section: field -> (the data key, its value)."""
    per_sample = "words_per_sample" if TOKENIZER_OF[kind] == "words" else "tokens_per_sample"
    return {"max_word_bytes": ("data.max_word_bytes", data.max_word_bytes),
            "max_words": (f"data.{per_sample}", getattr(data, per_sample))}


class StackConfig(Strict):
    """A small transformer stack (byte encoder or byte decoder)."""

    d_model: int = Field(64, ge=8)
    n_layers: int = Field(1, ge=1)
    n_heads: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


class ModelConfig(Strict):
    kind: Literal["word_pooled", "bytes", "bpe"] = Field(
        "word_pooled", description="word_pooled, or a baseline on the same backbone over bytes / BPE tokens")
    d_model: int = Field(128, ge=8, description="backbone width")
    n_layers: int = Field(2, ge=1, description="backbone layers")
    n_heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(8 / 3, gt=0)
    encoder: StackConfig = Field(default_factory=StackConfig)
    decoder: StackConfig = Field(default_factory=StackConfig)
    pooling: Literal["cls", "latent"] = Field(
        "cls", description="cls: pool_tokens learned slots per word (Learn Your Tokens); latent: a learned query "
                           "cross-attends to the word's bytes (HAT)")
    pool_tokens: int = Field(1, ge=1, le=4, description="cls pooling: backbone positions per word")
    layout: Literal["packed", "bucketed", "padded"] = Field(
        "packed", description="how the per-word encoder/decoder run. packed: the batch's words packed flat, no "
                              "padding, varlen attention (ops.varlen_attention; flash varlen kernels on CUDA); "
                              "bucketed: words grouped by length into power-of-two widths; padded: every word "
                              "padded to max_word_bytes (the reference)")
    byte_encoder: Literal["word", "stream"] = Field(
        "word", description="word: a bidirectional encoder over each word alone (Learn Your Tokens); stream: a causal "
                            "encoder over the sample's flat byte stream with a sliding window (HAT), pooled per word "
                            "by a latent query, whose byte states are also the decoder's input, so a word's first "
                            "byte sees the bytes before it")
    encoder_window: int = Field(64, ge=1, description="byte_encoder=stream: bytes each byte attends to (itself included)")
    decoder_context: Literal["prefix", "every_layer"] = Field(
        "prefix", description="prefix: the backbone context enters the decoder as its first position only; "
                              "every_layer: also added to the residual stream before every decoder layer through a "
                              "per-layer projection (what cross-attention to that one vector computes, HAT)")
    hash_ngrams: list[int] = Field(
        default_factory=list, description="byte n-gram sizes whose hashed embeddings are added to the encoder's byte "
                                          "embeddings (BLT: [3, 4, 5, 6, 7, 8]); empty: none")
    hash_buckets: int = Field(4096, ge=1, description="hash_ngrams: embedding rows per n-gram size")
    vocab_size: int | None = Field(None, ge=2, description="bytes/bpe baselines: filled in from the shards")
    max_word_bytes: int = Field(32, ge=4, description="derived from data.max_word_bytes: set that instead")
    max_words: int = Field(256, ge=2, description="longest sequence the model reads (generation window); derived "
                                                  "from data.words_per_sample (word_pooled) or data.tokens_per_sample "
                                                  "(bytes, bpe): set that instead")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    rope_base: float = 10000.0

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.byte_encoder == "stream" and self.pooling != "latent":
            raise ValueError("byte_encoder=stream pools each word with a latent query over its byte states: "
                             "set model.pooling: latent")
        if any(n < 1 for n in self.hash_ngrams) or len(set(self.hash_ngrams)) != len(self.hash_ngrams):
            raise ValueError(f"hash_ngrams={self.hash_ngrams}: distinct sizes >= 1 expected")
        return self
