"""Data of wordpool's own lm-eval tasks, built from text every CPython carries (the `help()` topics, part
of the quickstart's built-in corpus): nothing to download, the same documents on every machine.
lm-eval calls these through `custom_dataset: !function builtin_tasks.NAME` with the task's metadata."""
from __future__ import annotations

import random
import re

import datasets

from data_pipeline.builtin_corpus import help_topics, prose_paragraphs

_SENTENCE_END = re.compile(r"(?<=[a-z]\.)\s+(?=[A-Z])")
_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]{4,})\.$")


def _sentences() -> list[tuple[str, str]]:
    """(the sentence up to its last word, that word) for prose sentences of 8+ words ending in a word."""
    out = []
    for paragraph in prose_paragraphs(help_topics()):
        for sentence in _SENTENCE_END.split(paragraph):
            match = _LAST_WORD.match(sentence)
            if match and len(sentence.split()) >= 8:
                out.append((match.group(1), match.group(2)))
    return out


def cloze(n_docs: int = 200, n_choices: int = 4, seed: int = 1234, **_) -> dict[str, datasets.Dataset]:
    """Multiple choice: a sentence's last word among n_choices - 1 other sentences' last words."""
    rng = random.Random(seed)
    sentences = _sentences()
    answers = sorted({word for _, word in sentences})
    docs = []
    for context, word in rng.sample(sentences, min(n_docs, len(sentences))):
        choices = rng.sample([a for a in answers if a != word], n_choices - 1) + [word]
        rng.shuffle(choices)
        docs.append({"context": context, "choices": choices, "label": choices.index(word)})
    return {"test": datasets.Dataset.from_list(docs)}


def next_word(n_docs: int = 100, seed: int = 1234, **_) -> dict[str, datasets.Dataset]:
    """Generation: the word that ends a sentence, from the sentence before it."""
    rng = random.Random(seed)
    picked = rng.sample(_sentences(), n_docs)
    return {"test": datasets.Dataset.from_list([{"context": c, "answer": w} for c, w in picked])}


def paragraphs(n_docs: int = 100, seed: int = 1234, **_) -> dict[str, datasets.Dataset]:
    """Rolling log-likelihood: whole prose paragraphs."""
    texts = prose_paragraphs(help_topics())
    return {"test": datasets.Dataset.from_list([{"text": t} for t in random.Random(seed).sample(texts, n_docs)])}


def rolling_results(doc, results):
    """lm-eval's wikitext accounting: per-word and per-byte perplexity, bits per byte."""
    (loglikelihood,) = results
    n_bytes, n_words = len(doc["text"].encode()), len(doc["text"].split())
    return {"word_perplexity": (loglikelihood, n_words), "byte_perplexity": (loglikelihood, n_bytes),
            "bits_per_byte": (loglikelihood, n_bytes)}
