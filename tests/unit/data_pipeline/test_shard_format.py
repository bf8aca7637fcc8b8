"""The sample format (data_pipeline/shard_format.py): dataset decomposition, packing, document starts."""
import numpy as np
import pytest

from data_pipeline.shard_format import DocItems, SamplePacker, decomposition, starts_document


@pytest.mark.parametrize("n, max_len, lengths", [
    (0, 8, []),
    (1, 8, [1]),
    (8, 8, [8]),
    (13, 8, [8, 4, 1]),
    (27, 8, [8, 8, 8, 2, 1]),
    (7, 8, [4, 2, 1]),
    (300, 256, [256, 32, 8, 4]),
])
def test_decomposition_lengths(n, max_len, lengths):
    chunks = decomposition(n, max_len)
    assert [b - a for a, b in chunks] == lengths


@pytest.mark.parametrize("max_len", [1, 2, 16, 256])
def test_decomposition_covers_every_item_in_power_of_two_chunks(max_len):
    for n in range(0, 600, 7):
        chunks = decomposition(n, max_len)
        assert [a for a, _ in chunks] == ([0] + [b for _, b in chunks[:-1]] if n else [])  # contiguous, in order
        assert (chunks[-1][1] if chunks else 0) == n
        lengths = [b - a for a, b in chunks]
        assert all(x & (x - 1) == 0 and 0 < x <= max_len for x in lengths)
        assert lengths == sorted(lengths, reverse=True)  # largest first
        assert len(set(x for x in lengths if x < max_len)) == len([x for x in lengths if x < max_len])


def test_packer_fills_samples_and_marks_document_segments():
    packer = SamplePacker(4)
    doc = DocItems(word_lens=np.array([2, 3, 1, 2, 0], np.uint32), data=b"abcdefghi"[:8])
    samples = list(packer.add("src", 0, 0, doc)) + list(packer.flush())
    assert [s["word_lens"].tolist() for s in samples] == [[2, 3, 1, 2], [0]]
    assert [s["bytes"] for s in samples] == [b"abcdefgh", b""]
    # [source, ordinal, offset, part, first_item, n_items, ends]: the end marker is no item of the text
    assert samples[0]["docs"] == [["src", 0, 0, 0, 0, 4, False]]
    assert samples[1]["docs"] == [["src", 0, 0, 1, 0, 0, True]]
    assert starts_document(samples[0]["docs"]) and not starts_document(samples[1]["docs"])
    assert not starts_document([])


def test_one_document_per_sample_never_mixes_documents():
    packer = SamplePacker(8, one_doc_per_sample=True)
    a = DocItems.from_tokens(np.array([1, 2, 3], np.uint16), eod=256)
    b = DocItems.from_tokens(np.array([4, 5], np.uint16), eod=256)
    samples = list(packer.add("s", 0, 0, a)) + list(packer.add("s", 1, 10, b)) + list(packer.flush())
    assert [s["tokens"].tolist() for s in samples] == [[1, 2, 3, 256], [4, 5, 256]]
    assert [len(s["docs"]) for s in samples] == [1, 1]
    mixed = SamplePacker(8)
    both = list(mixed.add("s", 0, 0, a)) + list(mixed.add("s", 1, 10, b)) + list(mixed.flush())
    assert [s["tokens"].tolist() for s in both] == [[1, 2, 3, 256, 4, 5, 256]]
    assert both[0]["docs"] == [["s", 0, 0, 0, 0, 3, True], ["s", 1, 10, 0, 4, 2, True]]
