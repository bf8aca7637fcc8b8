"""The three tokenizations of one `wordpool compare` (words, bytes, BPE) of the same documents and split,
prepared under the compare's out/data/ (reused when already prepared). The baselines' tokens per sample
default to the word model's text bytes per sample, so every model sees the same context in bytes."""
from __future__ import annotations

from pathlib import Path

from launcher.compare.config import CompareConfig

BPE_BYTES_PER_TOKEN_GUESS = 3.3  # only sizes the first BPE pass; the real value comes from its stats.json


def _prepare(cfg: CompareConfig, tokenizer: str, out: Path, tokens_per_sample: int) -> dict:
    from data_pipeline.job import prepare_or_replace
    from data_pipeline.shard_format import read_stats

    update = {"output": str(out), "tokenizer": tokenizer, "tokens_per_sample": tokens_per_sample,
              "bpe_vocab_size": bpe_vocab(cfg)}
    prepare_or_replace(cfg.data.model_copy(update=update))  # the folder belongs to this compare
    return read_stats(out)


def bpe_vocab(cfg: CompareConfig) -> int:
    from schema import DataConfig

    return cfg.models.bpe.vocab_size if cfg.models.bpe else DataConfig().bpe_vocab_size


def prepare_data(cfg: CompareConfig, out: Path) -> tuple[dict[str, Path], dict[str, dict], dict[str, int]]:
    """The tokenizations the models read under out/data/, their stats, and each model kind's symbols per
    sample."""
    folders = {tok: out / "data" / tok for tok in ("words", "bytes", "bpe")}
    stats = {"words": _prepare(cfg, "words", folders["words"], cfg.data.words_per_sample)}
    bytes_per_sample = cfg.data.words_per_sample * stats["words"]["bytes_per_word"]
    per_sample = {"word_pooled": cfg.data.words_per_sample}
    if cfg.models.bytes is not None:
        per_sample["bytes"] = cfg.models.bytes.tokens_per_sample or round(bytes_per_sample)
        stats["bytes"] = _prepare(cfg, "bytes", folders["bytes"], per_sample["bytes"])
    if cfg.models.bpe is None:
        return folders, stats, per_sample
    bpe_tokens = cfg.models.bpe.tokens_per_sample
    if bpe_tokens is None:  # matched bytes need the BPE's bytes/token: from an earlier pass if there is one
        from data_pipeline.shard_format import STATS_FILE, read_stats

        earlier = folders["bpe"]
        guess = (read_stats(earlier)["bytes_per_token"] if (earlier / STATS_FILE).is_file()
                 else BPE_BYTES_PER_TOKEN_GUESS)
        bpe_tokens = round(bytes_per_sample / guess)
    stats["bpe"] = _prepare(cfg, "bpe", folders["bpe"], bpe_tokens)
    if cfg.models.bpe.tokens_per_sample is None:
        matched = round(bytes_per_sample / stats["bpe"]["bytes_per_token"])
        if matched != bpe_tokens:  # the guess was off: pack again with the measured bytes/token
            bpe_tokens = matched
            stats["bpe"] = _prepare(cfg, "bpe", folders["bpe"], bpe_tokens)
    per_sample["bpe"] = bpe_tokens
    return folders, stats, per_sample
