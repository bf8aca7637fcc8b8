"""Big inputs cut into units (data_pipeline/plan.py): the parts' records are exactly the whole file's."""
import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schema import DataConfig
from data_pipeline.documents import Document, read_file
from data_pipeline.plan import Part, absolute_lines, plan_units

PIECES = [b"word ", b"Satz. ", b"\xc3\xa9t\xc3\xa9 ", b"\n", b"\n", b"  \n", b"\r\n", b"\r", b" \t\n", b"\x0c\n",
          b"x\n", b"\xff"]


def _records(path, rule, part=None):
    return [(type(r).__name__, r.offset, r.text if isinstance(r, Document) else (r.nbytes, r.reason))
            for r in read_file(str(path), "auto", rule, "text", part)]


def _parts_records(path, cfg):
    units = plan_units([str(path)], cfg)
    records, ordinals = [], []
    for row in units:
        part = Part.of(row)
        records += _records(path, cfg.doc_split, part)
        ordinals += [r.ordinal for r in read_file(str(path), "auto", cfg.doc_split, "text", part)]
    return units, records, ordinals


@pytest.mark.parametrize("rule", ["line", "paragraph"])
@pytest.mark.parametrize("seed", range(6))
def test_text_parts_hold_the_whole_files_documents(tmp_path, rule, seed):
    rng = random.Random(seed)
    path = tmp_path / "big.txt"
    path.write_bytes(b"".join(rng.choice(PIECES) for _ in range(20_000)))
    cfg = DataConfig(doc_split=rule, unit_bytes=rng.choice([500, 3000, 20_000]))
    units, records, ordinals = _parts_records(path, cfg)
    assert len(units) > 1 and units[0]["start"] == 0 and units[-1]["stop"] == path.stat().st_size
    assert all(a["stop"] == b["start"] for a, b in zip(units, units[1:]))
    assert records == _records(path, rule)  # same documents, offsets, rejections
    assert ordinals == sorted(set(ordinals))  # unique, in file order
    assert sum(u["share"] for u in units) == pytest.approx(1.0)


def test_jsonl_parts_and_line_numbers_of_rejections(tmp_path):
    lines = [json.dumps({"text": f"document {i} " * (i % 7 + 1)}).encode() for i in range(400)]
    lines[350] = b'{"text": '  # malformed, late in the file
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\r\n".join(lines[:10]) + b"\r\n" + b"\n".join(lines[10:]) + b"\n")
    cfg = DataConfig(unit_bytes=2000)
    units, records, _ = _parts_records(path, cfg)
    assert len(units) > 5 and records == _records(path, "paragraph")
    summaries = []
    for row in units:  # what the units' markers hold: line numbers counted within each part
        rejected = [{"line": r.line} for r in read_file(str(path), "auto", "paragraph", "text", Part.of(row))
                    if not isinstance(r, Document)]
        summaries.append({"path": str(path), "part": row, "rejected": rejected})
    absolute_lines(summaries, "auto")
    assert [r["line"] for s in summaries for r in s["rejected"]] == [351]


def test_parquet_parts_are_runs_of_row_groups(tmp_path):
    path = tmp_path / "big.parquet"
    texts = [f"row {i} " * 20 for i in range(1000)]
    texts[500] = None
    pq.write_table(pa.table({"text": texts}), path, row_group_size=100)
    units, records, ordinals = _parts_records(path, DataConfig(unit_bytes=5000))
    assert len(units) > 2 and all(u["kind"] == "row_groups" for u in units)
    assert records == _records(path, "paragraph") and ordinals == list(range(1000))


def test_kept_whole(tmp_path):
    text = tmp_path / "a.txt"
    text.write_bytes(b"para one\n\npara two\n" * 1000)
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"text": "x"}\n' * 5000))
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00" + b"line\n" * 5000)
    for path, rule in ((text, "file"), (packed, "line"), (binary, "line")):
        units = plan_units([str(path)], DataConfig(doc_split=rule, unit_bytes=100))
        assert [u["kind"] for u in units] == [""], path
    assert len(plan_units([str(text)], DataConfig(doc_split="paragraph", unit_bytes=100))) > 10
