"""One input of each kind (text, JSON Lines plain/.gz/.zst, Parquet, a saved HF dataset), for the tests of
data_pipeline/sources.py (tests/unit/data_pipeline/test_sources.py, tests/integration/test_sources_s3.py)."""
import dataclasses
import gzip

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from data_pipeline.documents import Document, read_file

TEXT = "First paragraph.\n\nSecond one, with ünïcode.\n"
JSONL = b"\n".join([b'{"text": "doc one", "id": 1}', b'{"text": ', b'{"text": "doc \xc3\xbc two"}']) + b"\n"
# row 2: null, row 3: empty, row 4: whitespace only
BODIES = ["alpha beta", None, "", "  \n", "gamma ü", "delta"]


def _read(path, fmt="auto", field="text", rule="paragraph"):
    return list(read_file(str(path), fmt, rule, field))


def _accounted(records):
    return sum(len(r.text.encode()) + r.markup_bytes if isinstance(r, Document) else r.nbytes for r in records)


def _without_source(records):
    return [dataclasses.replace(r, source="") for r in records]


def _write_hf(folder, bodies, field="body", shards=2):
    datasets.Dataset.from_dict({field: bodies, "n": list(range(len(bodies)))}).save_to_disk(
        str(folder), num_shards=shards)
    return folder


def write_input_kinds(root):
    """One of each input kind, in one folder."""
    (root / "a.txt").write_text(TEXT)
    (root / "b.jsonl").write_bytes(JSONL)
    (root / "c.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (root / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(JSONL))
    table = pa.table({"id": list(range(len(BODIES))), "body": BODIES})
    pq.write_table(table, root / "e.parquet", row_group_size=2)  # rows numbered across row groups
    _write_hf(root / "f_hf", BODIES)
    return root
