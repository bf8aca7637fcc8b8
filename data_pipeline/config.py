"""Schema of the `data` section: how raw corpora become word-segmented MDS shards.

Pure pydantic, no Ray import: the training side reads this schema too.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    inputs: list[str] = Field(default_factory=list, description="files or globs to read")
    output: str = Field("data/shards", description="folder receiving train/ val/ and stats.json")
    input_format: Literal["auto", "text", "jsonl"] = "auto"
    text_field: str = Field("text", description="JSON Lines field holding the document text")
    doc_split: Literal["file", "paragraph", "line"] = Field(
        "paragraph", description="how plain text is cut into documents; delimiters stay with the document"
    )
    max_word_bytes: int = Field(32, ge=4, le=65535, description="longer words are cut at UTF-8 char boundaries")
    words_per_sample: int = Field(256, ge=2, description="words (end-of-document markers included) per sample")
    val_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of documents routed to val")
    seed: int = 0
    compression: Literal["zstd", "none"] = "zstd"
    shard_size_limit: int = Field(1 << 26, ge=1 << 16, description="bytes per MDS shard before compression")
    ray_address: str | None = Field(None, description="join this Ray cluster instead of starting a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray cluster (default: all)")
    object_store_mb: int | None = Field(None, ge=64, description="object store size of the local Ray cluster")
