"""The word-pooled model's symbol alphabet: the 256 byte values and four special ids."""
from __future__ import annotations

import torch

PAD, EOW, EOD, POOL = 256, 257, 258, 259  # POOL: kept out of the vocabulary's use, banned in output
VOCAB = 260


def banned_symbols(L: int, device=None) -> torch.Tensor:
    """[L+1, VOCAB] bool, True where decoder slot i may never emit that id: PAD and POOL anywhere,
    EOW at slot 0 (no empty words), EOD after slot 0 (it is a one-symbol word). Shared by greedy
    generation and the n_correct metric so that the two agree."""
    ban = torch.zeros(L + 1, VOCAB, dtype=torch.bool, device=device)
    ban[:, [PAD, POOL]] = True
    ban[0, EOW] = True
    ban[1:, EOD] = True
    return ban


def needs_eow(words: torch.Tensor, word_lens: torch.Tensor, max_word_bytes: int) -> torch.Tensor:
    """Which words [..., w] end with an end-of-word target: present ones shorter than the cap (at the
    cap the word is over without one, as generation stops there), except the end-of-document marker
    (a one-symbol word)."""
    return (word_lens > 0) & (word_lens < max_word_bytes) & (words[..., 0] != EOD)
