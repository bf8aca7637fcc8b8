"""Byte-level BPE for the subword baseline, with Hugging Face `tokenizers`.

Trained on the training split only (so validation text stays unseen), saved beside the shards as
`tokenizer.json`; `<|eod|>` is its end-of-document token. Byte-level BPE is lossless on UTF-8 text.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable

EOD_TOKEN = "<|eod|>"
TOKENIZER_FILE = "tokenizer.json"


def train_bpe(texts: Iterable[str], vocab_size: int, out_file: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOD_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tmp = out_file.with_suffix(".tmp")
    tokenizer.save(str(tmp))
    tmp.replace(out_file)


@lru_cache(maxsize=4)
def load_bpe(tokenizer_json: str):
    """A tokenizer from its JSON text (cached: each task loads it once)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


def eod_id(tokenizer_json: str) -> int:
    return load_bpe(tokenizer_json).token_to_id(EOD_TOKEN)
