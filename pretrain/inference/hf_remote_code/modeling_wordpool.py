"""A wordpool export as a Hugging Face model (written by `wordpool export --hf`):

    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
    model.generate("The service was", max_words=20)           # text in, text out, as `wordpool generate`
    logits = model(**model.encode(["The service was good"])).logits

The model is wordpool's own code, copied beside this file with relative imports: `wordpool` is the
same module `load_exported` builds (WordPooledLM or TokenLM), so the logits are the same.
Word-pooled: inputs are words [B, W, max_word_bytes] and word_lens [B, W] (wordpool's splitter);
logits [B, W-1, max_word_bytes+1, 260] are the teacher-forced decoder's (entry t: word t+1).
Baselines (bytes, bpe): input_ids [B, T]; logits [B, T, vocab] (entry t: token t+1).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from transformers.utils import cached_file

from .configuration_wordpool import WordpoolHFConfig
from .schema_model import ModelConfig
from .segment import split_words
from .symbols import PAD
from .token_lm import TokenLM
from .word_pooled import WordPooledLM

if TYPE_CHECKING:  # never run. For a local folder transformers copies into its module cache only the
    # files this one imports by name (found by a regex), not theirs: so every vendored file is named here.
    from ._cross_entropy_triton import cross_entropy_fwd_kernel  # noqa: F401
    from ._dispatch import use_fast  # noqa: F401
    from .byte_stream import flatten_words  # noqa: F401
    from .cross_entropy import cross_entropy_sum  # noqa: F401
    from .flops import word_pooled  # noqa: F401
    from .hash_ngrams import HashNgramEmbedding  # noqa: F401
    from .layers import Stack  # noqa: F401
    from .packed_layout import pack  # noqa: F401
    from .pooling import LatentPool  # noqa: F401
    from .sampling import pick_next  # noqa: F401
    from .schema_base import Strict  # noqa: F401
    from .varlen_attention import varlen_attention  # noqa: F401
    from .word_generation import generate  # noqa: F401


class WordpoolPreTrainedModel(PreTrainedModel):
    config_class = WordpoolHFConfig
    # model.safetensors keeps wordpool's parameter names (load_exported reads it too): transformers adds
    # this prefix on load, as for a base-model checkpoint loaded into a model with a head
    base_model_prefix = "wordpool"
    main_input_name = "input_ids"

    def _init_weights(self, module):
        pass  # wordpool's constructors initialize; from_pretrained loads every weight


class WordpoolForCausalLM(WordpoolPreTrainedModel):
    def __init__(self, config: WordpoolHFConfig):
        super().__init__(config)
        self.model_config = ModelConfig.model_validate(config.wordpool_hf["model"])
        self.split_digits = bool(config.wordpool_hf.get("split_digits", False))
        self.wordpool = (WordPooledLM if self.model_config.kind == "word_pooled" else TokenLM)(self.model_config)
        self._tokens = None  # baselines: (token table, BPE tokenizer or None), read on first use
        self.post_init()

    def split(self, text: str) -> list[bytes]:
        """`text`'s words by wordpool's splitter and this model's settings (max_word_bytes, split_digits)."""
        return split_words(text, self.model_config.max_word_bytes, self.split_digits)

    def encode(self, texts: list[str] | str) -> dict[str, torch.Tensor]:
        """Model inputs of texts, each from its start. Word-pooled: words/word_lens (a shorter text's
        missing words have length 0). Baselines: input_ids right-padded with 0 (causal: the padding
        changes no logit of a real position), and `lengths`."""
        texts = [texts] if isinstance(texts, str) else texts
        dev = self.wordpool.head.weight.device
        if self.model_config.kind == "word_pooled":
            split = [self.split(t) for t in texts]
            W, L = max(2, max(len(s) for s in split)), self.model_config.max_word_bytes
            words = torch.full((len(texts), W, L), PAD, dtype=torch.long, device=dev)
            word_lens = torch.zeros(len(texts), W, dtype=torch.long, device=dev)
            for b, s in enumerate(split):
                for i, w in enumerate(s):
                    words[b, i, :len(w)] = torch.tensor(list(w), dtype=torch.long)
                    word_lens[b, i] = len(w)
            return {"words": words, "word_lens": word_lens}
        ids = [self._token_ids(t) for t in texts]
        input_ids = torch.zeros(len(texts), max(len(i) for i in ids), dtype=torch.long, device=dev)
        for b, i in enumerate(ids):
            input_ids[b, :len(i)] = torch.tensor(i, dtype=torch.long)
        return {"input_ids": input_ids, "lengths": torch.tensor([len(i) for i in ids], device=dev)}

    def forward(self, input_ids=None, words=None, word_lens=None, **_) -> CausalLMOutput:
        if self.model_config.kind == "word_pooled":
            if words is None or word_lens is None:
                raise ValueError("a word-pooled model reads words and word_lens (see encode())")
            return CausalLMOutput(logits=self.wordpool.decoder_logits(words, word_lens))
        return CausalLMOutput(logits=self.wordpool.logits(input_ids))

    # ---- generation: the same as `wordpool generate` (pretrain/inference/loading.py) ----------------
    def _token_tools(self):
        if self._tokens is None:
            hf = self.config.wordpool_hf
            table = json.loads(open(cached_file(self.name_or_path, hf["token_bytes_file"])).read())
            tokenizer = None
            if hf.get("tokenizer_file"):
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(cached_file(self.name_or_path, hf["tokenizer_file"]))
            self._tokens = ([None if h is None else bytes.fromhex(h) for h in table], tokenizer)
        return self._tokens

    def _token_ids(self, text: str) -> list[int]:
        _, tokenizer = self._token_tools()
        return tokenizer.encode(text).ids if tokenizer is not None else list(text.encode())

    @torch.no_grad()
    def generate(self, prompt: str = "", max_words: int = 20, temperature: float = 0.0, top_k: int | None = None,
                 seed: int = 0) -> str:
        """The prompt's continuation (without the prompt), up to max_words words of wordpool's splitter;
        greedy at temperature 0. Word-pooled: word by word with the model's caches; baselines: token by
        token, cut after max_words words."""
        # on the model's device, so that sampling works on CUDA too (on CPU: `wordpool generate`'s draws)
        generator = torch.Generator(device=self.wordpool.head.weight.device).manual_seed(seed)
        if self.model_config.kind == "word_pooled":
            context = self.split(prompt) if prompt else []
            out = self.wordpool.generate(context, max_words, temperature=temperature, top_k=top_k,
                                         generator=generator)
            return b"".join(out).decode("utf-8", errors="replace")
        table, _ = self._token_tools()
        ids = self._token_ids(prompt) or [table.index(None)]  # an empty prompt starts a document
        per_word = 8 if self.model_config.kind == "bytes" else 3  # generous: cut to max_words words below
        out = self.wordpool.generate(ids, max_words * per_word, temperature, top_k, generator, stop_id=None,
                                     window=self.model_config.max_words)
        text = b"".join(table[i] or b"" for i in out).decode("utf-8", errors="replace")
        return b"".join(self.split(text)[:max_words]).decode("utf-8", errors="replace")
