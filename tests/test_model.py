"""Tests of the word-pooled LM: causality, padding isolation, counts, memorization, generation."""
import math

import pytest
import torch

from pretrain.config import ModelConfig, StackConfig
from pretrain.model import EOD, EOW, PAD, POOL, VOCAB, WordPooledLM

L, W = 8, 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: intra-op threads only add sync overhead, and on a busy 2-core box
    # OpenMP spin-waiting made the memorization test 20x slower. Restored for other test files.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_cfg(**kw) -> ModelConfig:
    base = dict(d_model=32, n_layers=1, n_heads=2, encoder=StackConfig(d_model=16, n_layers=1, n_heads=2),
                decoder=StackConfig(d_model=16, n_layers=1, n_heads=2), max_word_bytes=L, max_words=16)
    base.update(kw)
    return ModelConfig(**base)


def make_model(seed=0, **kw) -> WordPooledLM:
    torch.manual_seed(seed)
    return WordPooledLM(small_cfg(**kw)).eval()


def batch_from(samples: list[list[bytes | None]]):
    """None = end-of-document marker; samples shorter than W are padded with absent words."""
    B = len(samples)
    words = torch.full((B, W, L), PAD, dtype=torch.long)
    lens = torch.zeros(B, W, dtype=torch.long)
    text = torch.zeros(B, W, dtype=torch.long)
    for b, sample in enumerate(samples):
        for t, w in enumerate(sample):
            if w is None:
                words[b, t, 0], lens[b, t] = EOD, 1
            else:
                words[b, t, :len(w)] = torch.tensor(list(w))
                lens[b, t] = text[b, t] = len(w)
    return words, lens, text


def random_batch():
    return batch_from([
        [b"The", b" quick", b" brown", None, b"Fox", b" jumps!", b"12345678", b" x"],
        [b"a", b" bb", b" ccc", b" dddd", None, b"e"],  # two absent words at the end
    ])


def test_word_level_causality():
    model = make_model()
    words, lens, _ = random_batch()
    ref = model.decoder_logits(words, lens)
    assert ref.shape == (2, W - 1, L + 1, VOCAB)
    g = torch.Generator().manual_seed(1)
    for k in range(W - 1):
        w2, l2 = words.clone(), lens.clone()
        # Replace words k+1.. with random content and lengths (some of them absent or EOD).
        w2[:, k + 1:] = torch.randint(0, 256, w2[:, k + 1:].shape, generator=g)
        l2[:, k + 1:] = torch.randint(0, L + 1, l2[:, k + 1:].shape, generator=g)
        w2[1, -1, 0], l2[1, -1] = EOD, 1
        out = model.decoder_logits(w2, l2)
        # Entry t predicts word t+1: entries t < k only see words <= k.
        torch.testing.assert_close(out[:, :k], ref[:, :k], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, k:], ref[:, k:])


def test_byte_level_causality():
    model = make_model()
    words, lens, _ = random_batch()
    ref = model.decoder_logits(words, lens)
    k = 5  # b" jumps!" in sample 0, predicted by entry k-1
    for j in range(int(lens[0, k])):
        w2 = words.clone()
        w2[0, k, j] = (w2[0, k, j] + 1) % 256
        out = model.decoder_logits(w2, lens)
        # Decoder slot i sees symbols < i, so slots 0..j predict before byte j is seen.
        torch.testing.assert_close(out[0, k - 1, : j + 1], ref[0, k - 1, : j + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[0, k - 1, j + 1], ref[0, k - 1, j + 1])
        # Earlier words' predictions are untouched too.
        torch.testing.assert_close(out[:, : k - 1], ref[:, : k - 1], atol=1e-6, rtol=0)


def test_padding_never_enters_loss():
    model = make_model()
    words, lens, text = random_batch()
    ref = model(words, lens, text)
    pad_pos = torch.arange(L) >= lens.unsqueeze(-1)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randint(0, VOCAB, words.shape, generator=g)
        out = model(torch.where(pad_pos, noise, words), lens, text)
        for key in ("nll_sum", "n_symbols", "n_correct", "n_words", "n_text_bytes", "loss"):
            torch.testing.assert_close(out[key], ref[key], atol=1e-6, rtol=0)


def test_counts_and_targets():
    model = make_model()
    words, lens, text = random_batch()
    out = model(words, lens, text)
    tgt_lens = lens[:, 1:]
    assert out["n_symbols"].item() == sum(int(n) + 1 for n in tgt_lens.flatten() if n > 0)
    assert out["n_text_bytes"].item() == text[:, 1:].sum().item()
    assert out["n_words"].item() == (tgt_lens > 0).sum().item()
    assert 0 <= out["n_correct"].item() <= out["n_words"].item()
    assert out["loss"].item() == pytest.approx(out["nll_sum"].item() / out["n_symbols"].item(), rel=1e-6)
    # Untrained: roughly uniform over VOCAB.
    assert abs(out["loss"].item() - math.log(VOCAB)) < 1.0
    tgt = WordPooledLM.targets(words, lens)
    assert tgt[0, 3, :3].tolist() == [EOD, EOW, -100]           # EOD marker word
    assert tgt[0, 0, :5].tolist() == [*b"The", EOW, -100]
    assert tgt[0, 6].tolist() == [*b"12345678", EOW]              # full-length word
    assert (tgt[1, 6:] == -100).all()                            # absent words
    for v in out.values():
        assert torch.is_tensor(v) and v.dtype == torch.float32 and v.dim() == 0


def test_memorize_then_generate():
    torch.manual_seed(0)
    # Enc/dec width 32 rather than 16: the narrower model memorizes too slowly for a quick test.
    model = WordPooledLM(small_cfg(encoder=StackConfig(d_model=32, n_layers=1, n_heads=2),
                                   decoder=StackConfig(d_model=32, n_layers=1, n_heads=2))).train()
    doc = [b"The", b" cat", b" sat", b" on", b" the", b" mat", None, b"Hi"]
    words, lens, text = batch_from([doc, [b"A", b" dog", b" ran", b"!"]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(150):
        out = model(words, lens, text)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    out = model(words, lens, text)
    assert out["loss"].item() < 0.1 * first
    assert out["n_correct"].item() == out["n_words"].item()
    assert model.generate([b"The", b" cat"], max_words=3) == [b" sat", b" on", b" the"]
    # EOD comes back as b"" and continues into the next document unless told to stop.
    assert model.generate(doc[:6], max_words=2) == [b"", b"Hi"]
    assert model.generate(doc[:6], max_words=2, stop_at_eod=True) == [b""]
    assert model.training is False


def test_generate_valid_bytes_and_length():
    model = make_model()
    g = torch.Generator().manual_seed(0)
    prompt = [b"w%d" % i for i in range(20)] + [b"x" * (2 * L + 3)]  # longer than max_words; long word
    for kw in (dict(temperature=0.0), dict(temperature=1.0, generator=g), dict(temperature=2.0, top_k=5, generator=g)):
        out = model.generate(prompt, max_words=4, **kw)
        assert len(out) == 4
        assert all(isinstance(w, bytes) and len(w) <= L for w in out)
    assert len(model.generate([], max_words=2)) == 2
    assert model.generate([b"a"], max_words=0) == []


def test_generate_never_emits_special_ids():
    model = make_model()
    # Make PAD, POOL and EOW overwhelmingly likely: generation must still emit only legal symbols,
    # so every word is exactly one symbol long (EOW banned at slot 0, then EOW wins).
    def boost(_m, _inp, out):
        out = out.clone()
        out[..., [PAD, POOL, EOW]] += 1e4
        return out
    handle = model.head.register_forward_hook(boost)
    try:
        out = model.generate([b"hello"], max_words=5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(out) == 5 and all(len(w) <= 1 for w in out)


def test_chunked_attention_matches(monkeypatch):
    import pretrain.model as pm
    model = make_model()
    words, lens, _ = random_batch()
    ref = model.decoder_logits(words, lens)
    monkeypatch.setattr(pm, "_MAX_SDPA_BATCH", 3)
    torch.testing.assert_close(model.decoder_logits(words, lens), ref, atol=1e-6, rtol=0)


def test_rejects_wrong_word_width():
    model = make_model()
    words, lens, text = random_batch()
    with pytest.raises(ValueError):
        model(torch.nn.functional.pad(words, (0, 1), value=PAD), lens, text)


def test_bf16_and_num_params():
    model = make_model().to(torch.bfloat16)
    words, lens, text = random_batch()
    out = model(words, lens, text)
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    assert model.num_params() == sum(p.numel() for p in model.parameters()) > 0
    assert model.generate([b"hi"], max_words=2) is not None
