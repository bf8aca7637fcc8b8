import itertools
import re

import pytest

from data_pipeline.segment import segment, split_words
from texts import FOREIGN, long_words

# English: the built-in corpus; German, Russian, Chinese: tests/texts.py; long: generated words up to 90
# letters (Latin, Cyrillic, umlauts, CJK runs), cut by every cap used here
LANGS = ["en", "de", "ru", "zh", "long"]


@pytest.fixture(scope="module")
def lang_texts(english):
    return {"en": english.prose(100_000), **FOREIGN, "long": long_words(200)}


def _cuts(text, n=40):
    return range(1, len(text), max(1, len(text) // n))


def test_hat_rules():
    assert split_words("Hello, world!", 32) == [b"Hello,", b" world!"]
    assert split_words("Hello, world!", 4) == [b"Hell", b"o,", b" wor", b"ld!"]


@pytest.mark.parametrize("name", LANGS)
@pytest.mark.parametrize("cap", [8, 32])
def test_lossless_and_capped(lang_texts, name, cap):
    text = lang_texts[name]
    seg = segment(text, cap)
    assert seg.data == text.encode("utf-8")
    assert int(seg.lengths.max()) <= cap and int(seg.lengths.min()) >= 1
    # every cut lands on a character boundary: each word decodes on its own
    start = 0
    for n in seg.lengths.tolist():
        seg.data[start : start + n].decode("utf-8")
        start += n
    assert start == len(seg.data) and len(seg.lengths) > len(text.split()) // 2
    if name == "long" or cap == 8 and name != "zh":  # long words, 2-byte letters: the cap really cuts
        assert seg.words_cut > 0


def test_cut_words_counted_and_multibyte_never_split():
    # camelCase splits words ("ДонаДона" is two words); CJK is one character per word
    text = "донауда" * 10 + " ok ДонаудаДонауда 你好世界你好世界你好"
    seg = segment(text, 8)
    assert seg.words_cut == 3
    assert seg.data == text.encode()
    assert all(n <= 8 for n in seg.lengths.tolist())


@pytest.mark.parametrize("name", LANGS)
def test_prefix_stable(lang_texts, name):
    text = lang_texts[name][:20_000]
    full = split_words(text, 16)
    for cut in _cuts(text):
        prefix = split_words(text[:cut], 16)
        assert prefix[:-1] == full[: len(prefix) - 1]
        assert full[len(prefix) - 1].startswith(prefix[-1])


# --- one uncapped split + capping in Python must match hat-splitter's own capped split ---

@pytest.mark.parametrize("name", LANGS)
@pytest.mark.parametrize("cap", [4, 8, 32])
def test_matches_hat_splitter_cap(lang_texts, name, cap):
    from hat_splitter import HATSplitter

    text = lang_texts[name]
    splitter = HATSplitter()
    assert split_words(text, cap) == splitter.split_with_limit(text, cap)
    expected_cut = sum(1 for w in splitter.split(text) if len(w.encode()) > cap)
    assert segment(text, cap).words_cut == expected_cut


# --- split_digits: runs of > 3 ASCII digits cut into groups of 3 from the right ---

@pytest.mark.parametrize("text, words", [
    (" 1234567,", [b" 1", b"234", b"567,"]),
    ("1234", [b"1", b"234"]),
    ("123456", [b"123", b"456"]),
    ("123", [b"123"]),
    ("call 5551234567.", [b"call", b" 5", b"551", b"234", b"567."]),
    (" x12345y", [b" x12", b"345y"]),
    (" abc12345def6789", [b" abc12", b"345def6", b"789"]),  # text between runs joins the next run's group
    ("١٢٣٤٥ １２３４５", ["١٢٣٤٥".encode(), " １２３４５".encode()]),  # only ASCII digits are grouped
])
def test_split_digits_groups(text, words):
    assert split_words(text, 64, split_digits=True) == words
    assert b"".join(split_words(text, 64)) == text.encode()


def _numeric_text(n_words: int, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    parts = []
    for _ in range(n_words):
        kind = rng.random()
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        if kind < 0.3:
            parts.append(digits)
        elif kind < 0.4:
            parts.append(f"${digits[:4]},{digits[4:7]}.{digits[7:9]}")
        elif kind < 0.5:
            parts.append(f"x{digits}y{digits[::-1]}ž")
        elif kind < 0.6:
            parts.append(f"{digits}-{digits[:2]}-{digits[-5:]}")
        else:
            parts.append(rng.choice(["the", "Число", "数字", "and,", "(see", "ok)"]))
    return " ".join(parts) + ("\n" if seed % 2 else "")


@pytest.mark.parametrize("cap", [4, 5, 8, 32])
def test_split_digits_lossless_capped_and_counted(cap):
    from hat_splitter import HATSplitter

    text = _numeric_text(3000)
    seg = segment(text, cap, split_digits=True)
    assert seg.data == text.encode()
    assert int(seg.lengths.sum()) == len(seg.data) and int(seg.lengths.min()) >= 1
    assert int(seg.lengths.max()) <= cap
    words = split_words(text, cap, split_digits=True)
    assert [len(w) for w in words] == seg.lengths.tolist()
    for w in words:
        w.decode("utf-8")  # cuts on character boundaries
    assert not any(re.search(rb"[0-9]{4}", w) for w in words)  # no piece keeps a run of > 3 digits
    # words_cut counts the cap's cuts only: a long number grouped by digits is not "cut"
    uncapped = split_words(text, 2**31, split_digits=True)
    assert seg.words_cut == sum(1 for w in uncapped if len(w) > cap)
    assert segment(text, cap).words_cut == sum(1 for w in HATSplitter().split(text) if len(w.encode()) > cap)


def test_long_number_not_counted_as_cut():
    seg = segment(" " + "9" * 40, 8, split_digits=True)
    assert seg.words_cut == 0 and seg.lengths.tolist() == [2] + [3] * 13
    assert segment(" " + "9" * 40, 8).words_cut == 1


@pytest.mark.parametrize("split_digits", [False, True])
def test_prefix_stable_except_last_word(split_digits):
    """Pieces of every hat-splitter word before the prefix's last one are final; a growing number
    regroups from the right, so the last word's pieces may all change."""
    from hat_splitter import HATSplitter

    text = _numeric_text(400, seed=1)
    full = split_words(text, 6, split_digits=split_digits)
    for cut in range(1, len(text), 37):
        prefix_text = text[:cut]
        prefix = split_words(prefix_text, 6, split_digits=split_digits)
        last_word = HATSplitter().split_with_limit(prefix_text, 2**31)[-1]
        stable_bytes = len(prefix_text.encode()) - len(last_word)
        n_stable = sum(1 for end in itertools.accumulate(map(len, prefix)) if end <= stable_bytes)
        assert prefix[:n_stable] == full[:n_stable]
        assert b"".join(full).startswith(b"".join(prefix))
        if not split_digits:  # without digit groups only the very last piece may still grow
            assert prefix[:-1] == full[: len(prefix) - 1]


# --- segment_batch: many documents per splitter call, each document's words unchanged ---

def _documents(path, rule):
    from data_pipeline.documents import Document, read_file

    return [r.text for r in read_file(str(path), "auto", rule, "text") if isinstance(r, Document)]


def _assert_batch_matches(texts, cap, split_digits=False):
    from data_pipeline.segment import segment_batch

    batch = segment_batch(texts, cap, split_digits=split_digits)
    assert batch.data == "".join(texts).encode()
    assert len(batch.word_counts) == len(texts) and int(batch.word_counts.sum()) == len(batch.words)
    for i, text in enumerate(texts):
        alone, windowed = segment(text, cap, split_digits=split_digits), batch.document(i)
        assert windowed.data == alone.data, (i, text[:60])
        assert windowed.lengths.tolist() == alone.lengths.tolist(), (i, text[:60])
        assert windowed.words_cut == alone.words_cut


@pytest.mark.parametrize("name", LANGS + ["en_lines"])
@pytest.mark.parametrize("rule", ["paragraph", "line"])
def test_batch_equals_per_document(lang_texts, english, tmp_path, name, rule):
    text = "".join(english.lines(2000)) if name == "en_lines" else lang_texts[name]
    path = tmp_path / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    texts = _documents(path, rule)[:3000]
    # (the lines hold no blank line: one paragraph)
    assert len(texts) >= (6 if rule == "line" else 1 if name == "en_lines" else 4)
    _assert_batch_matches(texts, 32)
    _assert_batch_matches(texts, 6, split_digits=True)


def test_batch_edge_documents():
    # documents not ending with LF, CR endings, leading spaces/marks/flags, digit runs and CJK across
    # document ends, empty documents
    texts = ["Hello world", " next", "ends with cr\r", "\nstarts with lf\n", "1234\n", "5678 x\n", "  spaces  \n",
             " lead\n", "日本語\n", "中文 text\n", "\u0301mark\n", "🇩🇪\n", "🇫🇷 flag\n", "", "a_b\n", "fooBar\n",
             "Bar\r\n", "e.g\n", ".g\n", "1,\n", "234.5\n", "\u3000wide\n", "x" * 70 + "\n", "tail"]
    for cap in (4, 8, 64):
        for split_digits in (False, True):
            _assert_batch_matches(texts, cap, split_digits)
            _assert_batch_matches(texts[::-1], cap, split_digits)


def test_batch_uses_few_splitter_calls(english, monkeypatch):
    import data_pipeline.segment as seg_module

    calls = []
    real = seg_module._splitter()

    class Counting:
        def split_with_limit(self, text, cap):
            calls.append(len(text))
            return real.split_with_limit(text, cap)

    monkeypatch.setattr(seg_module, "_splitter", lambda: Counting())
    texts = [d for path in english.files for d in _documents(path, "paragraph")]
    total = sum(map(len, texts))
    assert seg_module.GROUP_CHARS < total < 2 * seg_module.GROUP_CHARS and len(texts) > 1000
    batch = seg_module.segment_batch(texts, 32)
    assert len(calls) <= 2  # ~1.2 MB of paragraphs that (all but the last) end with LF: one call per GROUP_CHARS
    assert sum(calls) == total and batch.data == "".join(texts).encode()
