import pytest

from data_pipeline.segment import segment, split_words

LANG_FILES = ["tinyshakespeare.txt", "ud/de_gsd-dev.txt", "ud/ru_gsd-dev.txt", "ud/zh_gsd-dev.txt"]


def test_hat_rules():
    assert split_words("Hello, world!", 32) == [b"Hello,", b" world!"]
    assert split_words("Hello, world!", 4) == [b"Hell", b"o,", b" wor", b"ld!"]


@pytest.mark.parametrize("name", LANG_FILES)
@pytest.mark.parametrize("cap", [8, 32])
def test_lossless_and_capped(corpora, name, cap):
    text = (corpora / name).read_text(encoding="utf-8")[:200_000]
    seg = segment(text, cap)
    assert seg.data == text.encode("utf-8")
    assert int(seg.lengths.max()) <= cap and int(seg.lengths.min()) >= 1
    # every cut lands on a character boundary: each word decodes on its own
    start = 0
    for n in seg.lengths.tolist():
        seg.data[start : start + n].decode("utf-8")
        start += n


def test_cut_words_counted_and_multibyte_never_split():
    # camelCase splits words ("ДонаДона" is two words); CJK is one character per word
    text = "донауда" * 10 + " ok ДонаудаДонауда 你好世界你好世界你好"
    seg = segment(text, 8)
    assert seg.words_cut == 3
    assert seg.data == text.encode()
    assert all(n <= 8 for n in seg.lengths.tolist())


@pytest.mark.parametrize("name", LANG_FILES)
def test_prefix_stable(corpora, name):
    text = (corpora / name).read_text(encoding="utf-8")[:20_000]
    full = split_words(text, 16)
    for cut in range(1, len(text), 997):
        prefix = split_words(text[:cut], 16)
        assert prefix[:-1] == full[: len(prefix) - 1]
        assert full[len(prefix) - 1].startswith(prefix[-1])
