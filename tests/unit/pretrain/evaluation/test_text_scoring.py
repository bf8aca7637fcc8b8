"""Text scoring (the lm-eval adapter's core): continuation log-likelihoods against a symbol-by-symbol hand
computation, is_greedy against real greedy generation, rolling windows against `wordpool eval`'s scoring."""
import numpy as np
import pytest
import torch

from schema import ModelConfig, StackConfig
from data_pipeline.segment import split_words
from pretrain.evaluation.text_scoring import TokenTextScorer, WordTextScorer, bits_per_byte, windows
from pretrain.evaluation.validation import evaluate
from pretrain.models.symbols import EOD, EOW
from pretrain.models.token_lm import TokenLM
from pretrain.models.word_generation import word_grid
from pretrain.models.word_pooled import WordPooledLM
from pretrain.training.loader import encode_sample, encode_token_sample

L, MAX_WORDS = 8, 12
ALL_OPTIONS = dict(pooling="latent", byte_encoder="stream", encoder_window=6, decoder_context="every_layer",
                   hash_ngrams=[2, 3], hash_buckets=64)
TEXT = "The cat sat on the mat, and the dog sat on the rug; extraordinarily long words get cut."


def _cfg(kind="word_pooled", **kw) -> ModelConfig:
    return ModelConfig(kind=kind, d_model=32, n_layers=1, n_heads=2, encoder=StackConfig(d_model=16, n_layers=1, n_heads=2),
                       decoder=StackConfig(d_model=16, n_layers=1, n_heads=2), max_word_bytes=L, max_words=MAX_WORDS, **kw)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()  # tiny models: extra threads only add sync overhead on a busy machine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def word_model():
    torch.manual_seed(0)
    model = WordPooledLM(_cfg(**ALL_OPTIONS)).eval()
    for m in model.modules():  # zero-initialized branches would test nothing
        if getattr(m, "zero_init", False):
            torch.nn.init.normal_(m.weight, std=0.02)
    return model


@pytest.fixture(scope="module")
def byte_model():
    torch.manual_seed(0)
    return TokenLM(_cfg("bytes", vocab_size=257)).eval()


BYTE_TABLE = [bytes([i]) for i in range(256)] + [None]


def _word_logprob_by_hand(model, context_words, word, first_symbol, with_eow):
    """log P of symbols first_symbol.. of `word` (and its EOW) after context_words, one symbol at a time,
    each read off decoder_logits on a grid holding only the context and the word so far."""
    total, symbols = 0.0, list(word) + ([EOW] if with_eow else [])
    for j in range(first_symbol, len(symbols)):
        grid = context_words + [list(word[:j]) + [0]]  # a placeholder byte: causal, never read
        logp = model.decoder_logits(*word_grid(model, grid))[0, -1, j].log_softmax(-1)
        total += float(logp[symbols[j]].detach())
    return total


@pytest.mark.parametrize("context, continuation", [
    ("The cat sat on", " the mat"),   # the continuation starts a word
    ("The cat sat on the m", "at, and"),  # ... starts inside a word: " m" is teacher-forced
    ("The cat", "s"),                  # one byte: no end-of-word is claimed for " cats"
])
def test_word_model_loglikelihood_equals_hand_computation(word_model, context, continuation):
    scorer = WordTextScorer(word_model)
    [score] = scorer.loglikelihood([(context, continuation)])
    words = split_words(context + continuation, L)
    boundary, offset, expected = len(context.encode()), 0, 0.0
    context_words = [[EOD]]
    for i, w in enumerate(words):
        end = offset + len(w)
        if end >= boundary:
            first = min(max(boundary - offset, 0), len(w))
            expected += _word_logprob_by_hand(word_model, context_words, w, first, i < len(words) - 1)
        context_words.append(list(w))
        offset = end
    assert score.n_bytes == len(continuation.encode())
    assert score.logprob == pytest.approx(expected, abs=1e-4)
    assert score.logprob < 0


def _memorize(model, samples, steps=150):
    """Train on a few samples until greedy decoding writes real words (a random model emits stray bytes)."""
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "doc_start"}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch)["loss"].backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def memorized():
    torch.manual_seed(0)
    word = WordPooledLM(_cfg(**ALL_OPTIONS))
    items = [b""] + split_words(TEXT, L)
    word_samples = [encode_sample({"bytes": b"".join(items[i:i + MAX_WORDS]),
                                   "word_lens": np.array([len(w) for w in items[i:i + MAX_WORDS]])}, MAX_WORDS, L)
                    for i in range(0, len(items) - 1, MAX_WORDS - 1)]
    ids = [256] + list(TEXT.encode())
    byte = TokenLM(_cfg("bytes", vocab_size=257))
    byte_samples = [encode_token_sample({"tokens": np.array(ids[i:i + MAX_WORDS]), "docs": []}, MAX_WORDS,
                                        np.array([1] * 256 + [0])) for i in range(0, len(ids) - 1, MAX_WORDS - 1)]
    return WordTextScorer(_memorize(word, word_samples)), TokenTextScorer(_memorize(byte, byte_samples), BYTE_TABLE)


def test_is_greedy_is_what_greedy_generation_produces(memorized):
    # both within the model's window (12 items), where generation and scoring read the same context
    for scorer, max_bytes in zip(memorized, (12, 4)):
        generated = scorer.generate("The cat", until=[], max_bytes=max_bytes)
        assert generated.startswith(" sat")  # it learned the text
        [greedy] = scorer.loglikelihood([("The cat", generated)])
        assert greedy.greedy
        # one byte changed: no longer what greedy decoding produces
        other = generated[:-1] + ("a" if generated[-1] != "a" else "b")
        assert not scorer.loglikelihood([("The cat", other)])[0].greedy


def test_generation_stops_before_the_stop_string(memorized):
    scorer = memorized[0]
    full = scorer.generate("The cat", until=[], max_bytes=30)
    stop = " on"
    assert stop and scorer.generate("The cat", until=[stop], max_bytes=30) == full[:full.index(stop)]
    assert len(scorer.generate("The cat", until=[], max_bytes=5).encode()) <= 5


def test_byte_model_loglikelihood_equals_hand_computation(byte_model):
    [score] = TokenTextScorer(byte_model, BYTE_TABLE).loglikelihood([("The c", "at")])
    ids = [256] + list(b"The cat")
    expected = sum(float(byte_model.logits(torch.tensor([ids[:t]]))[0, -1].log_softmax(-1)[ids[t]].detach())
                   for t in (6, 7))
    assert score.logprob == pytest.approx(expected, abs=1e-4) and score.n_bytes == 2


def test_windows_score_every_item_once_with_full_context():
    for n, first, size in [(5, 1, 12), (30, 1, 12), (30, 25, 12), (12, 1, 12), (13, 1, 12)]:
        spans = windows(n, first, size)
        scored = [i for _, start, hi in spans for i in range(start, hi)]
        assert scored == list(range(first, n))
        assert all(hi - lo <= size and lo < start for lo, start, hi in spans)
        assert all(hi - lo == size for lo, _, hi in spans if hi - size >= 0)


def _val_bpb(model, samples):
    """`wordpool eval`'s figure on these val samples: the loader's encoding, the evaluator's sums."""
    return evaluate(model, [{k: torch.stack([s[k] for s in samples]) for k in samples[0]}], 1,
                    torch.device("cpu"))["val_bpb"]


def test_rolling_bits_per_byte_equals_val_scoring_on_the_same_windows(word_model, byte_model):
    """`wordpool eval` scores every item of a val sample but its first. On val samples that are the rolling
    windows (the text behind an end-of-document item, each window after the first reading one item of the
    one before), its val bits/byte and the rolling bits/byte are the same number."""
    k = 3  # windows
    words = split_words(TEXT * 3, L)[:k * (MAX_WORDS - 1)]
    text = b"".join(words).decode()
    assert split_words(text, L) == words
    items = [b""] + words  # b"": the end-of-document item
    spans = windows(len(items), 1, MAX_WORDS)
    assert len(spans) == k and all(lo == start - 1 for lo, start, _ in spans)
    samples = [encode_sample({"bytes": b"".join(items[lo:hi]), "word_lens": np.array([len(w) for w in items[lo:hi]])},
                             MAX_WORDS, L) for lo, _, hi in spans]
    [rolled] = WordTextScorer(word_model).rolling([text])
    assert rolled.n_bytes == len(text.encode())
    assert bits_per_byte([rolled]) == pytest.approx(_val_bpb(word_model, samples), rel=1e-6)

    text = (TEXT * 3)[:k * (MAX_WORDS - 1)]
    ids = [256] + list(text.encode())
    spans = windows(len(ids), 1, MAX_WORDS)
    assert len(spans) == k and all(lo == start - 1 for lo, start, _ in spans)
    byte_lens = np.array([1] * 256 + [0])
    samples = [{k: v for k, v in encode_token_sample({"tokens": np.array(ids[lo:hi]), "docs": []}, MAX_WORDS,
                                                     byte_lens).items() if k != "doc_start"} for lo, _, hi in spans]
    [rolled] = TokenTextScorer(byte_model, BYTE_TABLE).rolling([text])
    assert bits_per_byte([rolled]) == pytest.approx(_val_bpb(byte_model, samples), rel=1e-6)


def test_bpe_model_loglikelihood_equals_hand_computation(tmp_path):
    """BPE: context and continuation are encoded together and split where the context's own tokens end
    (its trailing spaces moved to the continuation, as lm-eval's HF model does); the continuation's tokens
    are scored one by one."""
    from data_pipeline.bpe import load_bpe, train_bpe
    from pretrain.evaluation.word_scoring import bpe_byte_table

    train_bpe([TEXT] * 20, 300, tmp_path / "tokenizer.json")
    text = (tmp_path / "tokenizer.json").read_text()
    tokenizer, table = load_bpe(text), bpe_byte_table(text)
    torch.manual_seed(0)
    model = TokenLM(_cfg("bpe", vocab_size=len(table))).eval()
    [score] = TokenTextScorer(model, table, tokenizer).loglikelihood([("The cat sat on the ", "mat, and")])
    eod = table.index(None)
    context = tokenizer.encode("The cat sat on the").ids
    whole = tokenizer.encode("The cat sat on the mat, and").ids
    assert whole[:len(context)] == context and len(whole) > len(context)
    ids = [eod] + whole
    expected = sum(float(model.logits(torch.tensor([ids[:t]]))[0, -1].log_softmax(-1)[ids[t]].detach())
                   for t in range(1 + len(context), len(ids)))
    assert score.logprob == pytest.approx(expected, abs=1e-4) and score.n_bytes == len(" mat, and")


def test_lm_eval_multiple_choice_with_known_answers(memorized, tmp_path, monkeypatch):
    """lm-eval through the adapter, on a model that learned TEXT: the true continuation beats words the
    text never has after that context, for both model kinds (accuracy 1)."""
    import json

    from pretrain.evaluation.lm_eval_adapter import WordpoolLM, run_lm_eval

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    docs = [{"question": "The cat", "choices": ["zebra", "sat"], "label": 1},
            {"question": "The cat sat on the", "choices": ["mat,", "qqq"], "label": 0}]
    (tmp_path / "known.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "known.yaml").write_text(
        "task: known_answers\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'known.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n")
    for scorer in memorized:
        results = run_lm_eval(WordpoolLM(scorer), ["known_answers"], [tmp_path])
        assert results["results"]["known_answers"]["acc,none"] == 1.0
