"""Which split a document goes to: decided per document, deterministic by seed, the same for every
tokenization (so word, byte and BPE shards hold exactly the same train/val documents).

Keyed by the document's byte offset in its file (its row, for tables), not its ordinal: a unit reading
one part of a big file (data_pipeline/plan.py) knows its documents' offsets but not how many records
came before the part, so a file cut into parts sends every document where the whole file would."""
from __future__ import annotations

import hashlib


def assign_split(seed: int, source: str, offset: int, val_fraction: float) -> str:
    digest = hashlib.blake2b(f"{seed}\0{source}\0{offset}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2**64 < val_fraction else "train"
