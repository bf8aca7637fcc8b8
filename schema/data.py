"""Schema of the `data` section: how raw corpora become word-segmented MDS shards."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from schema.base import Strict


class DataConfig(Strict):
    inputs: list[str] = Field(default_factory=list, description="files or globs to read")
    output: str = Field("data/shards", description="the data folder or s3:// URL: `wordpool prepare` writes train/ "
                                                             "val/ and stats.json there, train and eval read it "
                                                             "(with train.streams: the first stream's path)")
    input_format: Literal["auto", "text", "jsonl", "parquet", "hf"] = Field(
        "auto", description="auto: by suffix (.jsonl/.parquet/…, .gz/.zst allowed); a saved HF dataset folder is hf")
    text_field: str = Field("text", description="JSON Lines field / Parquet or HF dataset column holding the text")
    doc_split: Literal["file", "paragraph", "line"] = Field(
        "paragraph", description="how plain text is cut into documents; delimiters stay with the document"
    )
    max_word_bytes: int = Field(32, ge=4, le=65535, description="longer words are cut at UTF-8 char boundaries")
    split_digits: bool = Field(False, description="cut digit runs into groups of 3 from the right (1|234|567)")
    tokenizer: Literal["words", "bytes", "bpe"] = Field("words", description="what the shards hold per item")
    words_per_sample: int = Field(256, ge=2, description="words (end-of-document markers included) per sample")
    tokens_per_sample: int = Field(1024, ge=2, description="tokens per sample for the bytes and bpe tokenizers")
    packing: Literal["fixed", "decompose"] = Field(
        "fixed", description="fixed: documents packed back to back; decompose: power-of-two chunks, one bucket each")
    bpe_vocab_size: int = Field(8192, ge=300, description="byte-level BPE vocabulary (trained on the train split)")
    bpe_train_bytes: int = Field(200_000_000, ge=1, description="train-split text bytes the BPE trainer reads at most")
    val_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of documents routed to val")
    seed: int = 0
    compression: Literal["zstd", "none"] = "zstd"
    shard_size_limit: int = Field(1 << 26, ge=1 << 16, description="bytes per MDS shard before compression")
    unit_bytes: int = Field(64 << 20, ge=1, description="text, JSON Lines and Parquet inputs bigger than this are "
                            "cut into units of about this size at record boundaries (.gz/.zst files stay whole)")
    ray_address: str | None = Field(None, description="join this Ray cluster instead of starting a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray cluster (default: all)")
    object_store_mb: int | None = Field(None, ge=64, description="object store size of the local Ray cluster")
