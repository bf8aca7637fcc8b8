"""The configuration of a wordpool export for Hugging Face transformers (written by `wordpool export --hf`).

config.json holds the run's wordpool config and its `export` block as well; this class reads only
`wordpool_hf`: the validated model section and the word splitter's settings."""
from __future__ import annotations

from transformers import PretrainedConfig


class WordpoolHFConfig(PretrainedConfig):
    model_type = "wordpool"

    def __init__(self, wordpool_hf: dict | None = None, **kwargs):
        self.wordpool_hf = wordpool_hf or {}
        kwargs.setdefault("tie_word_embeddings", False)  # no wordpool model ties its embeddings
        super().__init__(**kwargs)

    @property
    def kind(self) -> str:
        """word_pooled, bytes or bpe."""
        return self.wordpool_hf["model"]["kind"]
