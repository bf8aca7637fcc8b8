import json

import pytest

from data_pipeline.documents import Document, Rejected, read_file


def _read(path, rule="paragraph", fmt="auto", field="text"):
    return list(read_file(str(path), fmt, rule, field))


@pytest.mark.parametrize("rule", ["file", "paragraph", "line"])
def test_plain_text_documents_cover_the_file(tmp_path, rule):
    data = "\n\nFirst para\nstill first\n\n\nSecond para\n  \nThird\nlast line no newline"
    path = tmp_path / "a.txt"
    path.write_text(data)
    records = _read(path, rule)
    assert all(isinstance(r, Document) for r in records)
    assert "".join(r.text for r in records) == data
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    if rule == "paragraph":
        assert [r.text for r in records] == ["\n\nFirst para\nstill first\n\n\n", "Second para\n  \n",
                                             "Third\nlast line no newline"]
        assert [r.line for r in records] == [1, 7, 9]
    if rule == "line":
        assert len(records) == 5 and records[0].text == "\n\nFirst para\n"


def test_bad_inputs_rejected_with_file_line_reason(tmp_path):
    good = [{"text": "Good one."}, {"text": "Zweites Dokument."}]
    lines = [
        json.dumps(good[0]).encode(),
        b'{"text": "broken',
        b'{"other": "no text field"}',
        b'{"text": ""}',
        b'{"text": "bad \xff\xfe utf8"}',
        b'{"text": 42}',
        json.dumps(good[1]).encode(),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = _read(path)
    docs = [r for r in records if isinstance(r, Document)]
    rejected = [r for r in records if isinstance(r, Rejected)]
    assert [d.text for d in docs] == ["Good one.", "Zweites Dokument."]
    reasons = {r.line: r.reason for r in rejected}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "malformed JSON" in reasons[2]
    assert "missing text field 'text'" in reasons[3]
    assert reasons[4] == "empty document"
    assert "invalid UTF-8" in reasons[5]
    assert "not a string" in reasons[6]
    total = sum(r.nbytes for r in rejected) + sum(len(d.text.encode()) + d.markup_bytes for d in docs)
    assert total == path.stat().st_size


def test_binary_and_invalid_utf8_text(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    [rec] = _read(binary)
    assert isinstance(rec, Rejected) and rec.reason.startswith("binary file") and rec.nbytes == 700

    text = tmp_path / "t.txt"
    text.write_bytes(b"fine line\nbad \xc3\x28 line\nanother fine\n")
    records = _read(text, rule="line")
    assert [type(r).__name__ for r in records] == ["Document", "Rejected", "Document"]
    assert records[1].line == 2 and "invalid UTF-8 at byte 14" in records[1].reason
