"""Which split a document goes to: decided per document, deterministic by seed, the same for every
tokenization (so word, byte and BPE shards hold exactly the same train/val documents)."""
from __future__ import annotations

import hashlib


def assign_split(seed: int, source: str, ordinal: int, val_fraction: float) -> str:
    digest = hashlib.blake2b(f"{seed}\0{source}\0{ordinal}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2**64 < val_fraction else "train"
