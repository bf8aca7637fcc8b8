"""train.compile on the models: the packed word-pooled model and the byte/BPE baselines trace into one graph
(no graph break), and the compiled model's losses and gradients equal eager ones over batches of different
sizes, with a single compilation (the batch's counts are dynamic from the start: pretrain/training/compilation.py).

The backend is "aot_eager" (real torch.compile: Dynamo's graph capture plus AOTAutograd's forward/backward
graphs, run without code generation): inductor's C++ compilation of the word model takes minutes on a
2-core CPU. The default backend stays inductor; the engine-level test runs it on a baseline."""
import copy

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

from schema import ModelConfig, StackConfig
from pretrain.models import build_model
from pretrain.models.packed_layout import batch_sizes
from pretrain.models.word_pooled import EOD, PAD
from pretrain.training.compilation import mark_batch_sizes_dynamic

L, W, B = 8, 8, 2
WORD_VARIANTS = {  # the engine-level test (integration/test_compiled_training.py) runs the default (cls) compiled
    "cls": {},
    "cls2-every_layer-hashed": dict(pool_tokens=2, decoder_context="every_layer", hash_ngrams=[2, 3], hash_buckets=64),
    "latent": dict(pooling="latent"),
    "stream-every_layer-hashed": dict(pooling="latent", byte_encoder="stream", encoder_window=6,
                                      decoder_context="every_layer", hash_ngrams=[2, 3], hash_buckets=64),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def model_cfg(**kw) -> ModelConfig:
    stack = StackConfig(d_model=16, n_layers=1, n_heads=2)
    return ModelConfig(d_model=16, n_layers=1, n_heads=2, encoder=stack, decoder=stack, max_word_bytes=L,
                       max_words=W, **kw)


def word_batch(seed: int) -> dict:
    """Random words of random lengths, absent words at a sample's end and an end-of-document marker."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, L + 1, (B, W), generator=g)
    lens[0, W - 1 - seed % 3:] = 0
    words = torch.randint(32, 127, (B, W, L), generator=g)
    words = torch.where(torch.arange(L) < lens.unsqueeze(-1), words, PAD)
    words[1, 3] = PAD
    words[1, 3, 0], lens[1, 3] = EOD, 1
    text = lens.clone()
    text[1, 3] = 0
    return {"words": words, "word_lens": lens, "text_bytes": text, "sizes": batch_sizes(words, lens)}


def token_batch(seed: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (B, 12), generator=g)
    tokens[1, 12 - 1 - seed % 3:] = -1  # a short sample
    return {"tokens": tokens, "token_bytes": (tokens >= 0).long()}


CASES = [(f"word_pooled-{name}", model_cfg(**kw), word_batch) for name, kw in WORD_VARIANTS.items()] + [
    ("bytes", model_cfg(kind="bytes", vocab_size=257), lambda s: token_batch(s, 257)),
    ("bpe", model_cfg(kind="bpe", vocab_size=300), lambda s: token_batch(s, 300))]


@pytest.mark.parametrize("name,cfg,make_batch", CASES, ids=[c[0] for c in CASES])
def test_forward_is_one_graph_without_breaks(name, cfg, make_batch):
    torch.manual_seed(0)
    explained = torch._dynamo.explain(build_model(cfg))(**make_batch(0))
    assert explained.graph_break_count == 0, [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_padded_layout_breaks_where_its_rows_are_data_dependent():
    """The check above can fail: the padded (and bucketed) layout's rows per width (nonzero) break the graph."""
    explained = torch._dynamo.explain(build_model(model_cfg(layout="padded")))(**word_batch(0))
    assert explained.graph_break_count > 0


@pytest.mark.parametrize("name,cfg,make_batch", [CASES[3], CASES[4], CASES[5]], ids=[CASES[i][0] for i in (3, 4, 5)])
def test_compiled_equals_eager_over_batches_of_different_sizes(name, cfg, make_batch):
    mark_batch_sizes_dynamic()
    torch.manual_seed(0)
    eager = build_model(cfg)
    for m in eager.modules():  # zero-initialized branches (the per-layer condition) would test nothing
        if getattr(m, "zero_init", False):
            torch.nn.init.normal_(m.weight, std=0.02)
    compiled = copy.deepcopy(eager)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled.compile(backend=counter)
    batches = [make_batch(seed) for seed in range(3)]
    if "sizes" in batches[0]:
        assert len({b["sizes"] for b in batches}) == 3  # the counts differ from batch to batch
    for batch in batches:
        want, got = eager(**batch), compiled(**batch)
        for key in ("loss", "nll_sum", "n_symbols", "n_text_bytes", "n_words", "n_correct"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
        want["loss"].backward()
        got["loss"].backward()
        for (pname, p), q in zip(eager.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=pname)
        eager.zero_grad()
        compiled.zero_grad()
    assert counter.frame_count == 1  # no recompilation for new batch sizes


def test_counts_given_or_read_give_the_same_outputs():
    torch.manual_seed(0)
    model = build_model(model_cfg(**WORD_VARIANTS["stream-every_layer-hashed"]))
    batch = word_batch(1)
    given, read = model(**batch, details=True), model(**{k: v for k, v in batch.items() if k != "sizes"}, details=True)
    for key in given:
        assert torch.equal(given[key], read[key]), key
