"""A prepare unit in this process (no Ray): batch size never changes what it writes; a foreign output folder
is refused before anything is written."""
import hashlib
import json

import pytest

from schema import DataConfig
from data_pipeline.job import JobMismatch, run_prepare


def test_refuses_foreign_output_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(JobMismatch, match="not empty"):
        run_prepare(DataConfig(inputs=[str(tmp_path / "notes.txt")], output=str(tmp_path)))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("settings", [{}, {"tokenizer": "bytes", "packing": "decompose", "val_fraction": 0.3},
                                      {"doc_split": "line", "split_digits": True, "max_word_bytes": 8}])
def test_unit_output_independent_of_batch_size(english, tmp_path, monkeypatch, settings):
    """A unit segments and counts its documents a batch at a time: one-document batches and the
    default ones must write the very same files (shards, marker, word counts)."""
    import data_pipeline.unit as unit_module

    src = tmp_path / "in.jsonl"
    text = english.prose(60_000)
    lines = [json.dumps({"text": p + "\n\n"}) for p in text.split("\n\n")] + ["not json", json.dumps({"text": " 12345"})]
    src.write_text("\n".join(lines) + "\n")
    plain = tmp_path / "in.txt"
    plain.write_text(text)
    trees = []
    for batch_chars in (1, unit_module.BATCH_CHARS):
        monkeypatch.setattr(unit_module, "BATCH_CHARS", batch_chars)
        out = tmp_path / f"out-{batch_chars}"
        for unit, path in enumerate([src, plain]):
            cfg = DataConfig(inputs=[str(path)], output=str(out), **settings)
            unit_module.process_unit({"unit": unit, "path": str(path)}, cfg, str(out), None)
        trees.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1] and len(trees[0]) > 4
