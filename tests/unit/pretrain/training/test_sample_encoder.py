"""MDS samples -> model tensors (pretrain/training/loader.py): the encoder chosen from the shards' stats.json,
word samples padded into [words, bytes] rows, token samples with the text bytes of each token."""
import json

import numpy as np
import pytest
import torch

from data_pipeline.bpe import EOD_TOKEN, TOKENIZER_FILE, train_bpe
from pretrain.models.token_lm import PAD_TOKEN
from pretrain.models.word_pooled import EOD, PAD
from pretrain.training.loader import encode_sample, sample_encoder


def data_dir(tmp_path, **config):
    (tmp_path / "stats.json").write_text(json.dumps({"config": config}))
    return tmp_path


def test_word_samples_become_padded_rows(tmp_path):
    encode = sample_encoder(data_dir(tmp_path, tokenizer="words", words_per_sample=5, max_word_bytes=4))
    sample = {"bytes": "Hi yoü!".encode(), "word_lens": np.array([2, 4, 0, 2], np.uint32), "docs": []}
    out = encode(sample)
    assert out["words"].shape == (5, 4) and out["words"].dtype == torch.int64
    assert out["words"][0].tolist() == [*b"Hi", PAD, PAD]
    assert out["words"][1].tolist() == list(" yo\xc3".encode("latin-1"))  # bytes, not characters
    assert out["words"][2].tolist() == [EOD, PAD, PAD, PAD]  # a zero-length word: the end of a document
    assert out["words"][3].tolist() == [0xBC, ord("!"), PAD, PAD]
    assert out["words"][4].tolist() == [PAD] * 4  # absent word
    assert out["word_lens"].tolist() == [2, 4, 1, 2, 0]  # the EOD marker is one symbol long
    assert out["text_bytes"].tolist() == [2, 4, 0, 2, 0]  # but holds no text
    assert int(out["text_bytes"].sum()) == len(sample["bytes"])


def test_word_sample_too_large_for_the_model_is_refused(tmp_path):
    encode = sample_encoder(data_dir(tmp_path, tokenizer="words", words_per_sample=2, max_word_bytes=8))
    with pytest.raises(ValueError, match="model and shards disagree"):
        encode({"bytes": b"abc", "word_lens": np.array([1, 1, 1], np.uint32), "docs": []})
    wide = sample_encoder(tmp_path, max_word_bytes=2)  # the model's width may be set below the shards'
    with pytest.raises(ValueError, match="2 bytes"):
        wide({"bytes": b"abc", "word_lens": np.array([3], np.uint32), "docs": []})
    assert sample_encoder(tmp_path, max_word_bytes=16)({"bytes": b"abc", "word_lens": np.array([3], np.uint32),
                                                        "docs": []})["words"].shape == (2, 16)


def test_empty_word_sample(tmp_path):
    out = encode_sample({"bytes": b"", "word_lens": np.zeros(0, np.uint32)}, 3, 4)
    assert out["words"].tolist() == [[PAD] * 4] * 3 and out["word_lens"].tolist() == [0, 0, 0]


def test_byte_samples_carry_one_text_byte_per_token(tmp_path):
    encode = sample_encoder(data_dir(tmp_path, tokenizer="bytes", tokens_per_sample=6))
    ids = np.array([*b"ok", 256, *b"x"], np.uint16)
    out = encode({"tokens": ids, "docs": [["a", 0, 0, 0, 0, 2, True], ["a", 1, 3, 0, 3, 1, False]]})
    assert out["tokens"].tolist() == [*b"ok", 256, ord("x"), PAD_TOKEN, PAD_TOKEN]
    assert out["token_bytes"].tolist() == [1, 1, 0, 1, 0, 0]  # end of document: no text
    assert out["doc_start"].item() is True
    later = encode({"tokens": ids, "docs": [["a", 0, 0, 1, 0, 2, True]]})  # part 1 of a document
    assert later["doc_start"].item() is False
    with pytest.raises(ValueError, match="tokens_per_sample=6"):
        encode({"tokens": np.zeros(7, np.uint16), "docs": []})


def test_bpe_samples_count_the_bytes_of_each_token(tmp_path):
    folder = data_dir(tmp_path, tokenizer="bpe", tokens_per_sample=64)
    train_bpe(["the cat sat on the mat, the cat sat. Ünïcode 中国"] * 20, 300, folder / TOKENIZER_FILE)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    text = "the cat sat. 中国"
    ids = tokenizer.encode(text).ids + [tokenizer.token_to_id(EOD_TOKEN)]
    out = sample_encoder(folder)({"tokens": np.array(ids, np.uint32), "docs": [["s", 0, 0, 0, 0, len(ids) - 1, True]]})
    assert out["tokens"][: len(ids)].tolist() == ids and (out["tokens"][len(ids):] == PAD_TOKEN).all()
    assert int(out["token_bytes"].sum()) == len(text.encode())  # every text byte exactly once
    assert out["token_bytes"][len(ids) - 1] == 0 and (out["token_bytes"][: len(ids) - 1] > 0).all()
    assert len(ids) - 1 < len(text.encode())  # merges happened: some tokens hold several bytes
