"""The data bench's input parts (data_pipeline/bench.py write_parts)."""
from pathlib import Path


def test_write_parts_cuts_at_lines_and_keeps_every_byte(tmp_path):
    from data_pipeline.bench import BenchSettings, write_parts

    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(b'{"text": "line %d"}\n' % i for i in range(100)))
    (tmp_path / "parts").mkdir()
    parts = write_parts(BenchSettings(inputs=[str(source)], scale=3, parts=4), tmp_path / "parts")
    assert len(parts) == 4 and all(p.endswith(".jsonl") for p in parts)
    pieces = [Path(p).read_bytes() for p in parts]
    assert b"".join(pieces) == source.read_bytes() * 3
    assert all(piece.endswith(b"\n") for piece in pieces)
