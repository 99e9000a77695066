"""Constrain Hugging Face `generate` to catalog SIDs with a stateless, vectorised LogitsProcessor.

Use it where `generate` is wanted (sampling, chat, any decoding strategy); `align.decode.beam` is the faster
dedicated search for top-K items.
"""

import torch
from transformers import LogitsProcessor

from align.decode.trie import SIDTrie
from align.tokens import SIDVocab


class SIDConstraint(LogitsProcessor):
    """Masks scores so every generated sequence spells a catalog SID and then EOS.

    Stateless: the generated prefix is the trailing run of SID tokens of each row, so it works for greedy, sampling
    and beam search alike and needs no prompt length. Precondition: prompts end in a non-SID token (true after a
    chat template's assistant header). After a full SID only EOS is allowed; a row whose trailing SID tokens are not
    a catalog prefix (a broken precondition) is also sent to EOS rather than left with no allowed token.
    Vectorised: one trie lookup per SID level for all rows, no Python loop over rows.
    """

    def __init__(self, trie: SIDTrie, vocab: SIDVocab, eos_token_id: int | list[int]) -> None:
        trie.check_fits(vocab.level_sizes)
        self.trie = trie
        self.vocab = vocab
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.eos_token_ids = torch.tensor(eos, dtype=torch.int64)
        # token id -> SID level (or -1), and token id -> code, as lookup tables over [0, last SID id].
        end = max(f + s for f, s in zip(vocab.first_ids, vocab.level_sizes, strict=True))
        self.token_level = torch.full((end + 1,), -1, dtype=torch.int64)
        self.token_code = torch.full((end + 1,), -1, dtype=torch.int64)
        for level, (first, size) in enumerate(zip(vocab.first_ids, vocab.level_sizes, strict=True)):
            self.token_level[first : first + size] = level
            self.token_code[first : first + size] = torch.arange(size)

    def _to(self, device: torch.device) -> None:
        if self.token_level.device != device:
            self.trie = self.trie.to(device)
            self.token_level = self.token_level.to(device)
            self.token_code = self.token_code.to(device)
            self.eos_token_ids = self.eos_token_ids.to(device)

    def prefix_state(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each row stands in the trie.

        Args:
            input_ids: (R, S) prompt + generated tokens.

        Returns:
            depth: (R,) number of trailing SID tokens (0..L).
            nodes: (R,) trie node of that prefix at that depth, -1 if it is not a catalog prefix.
        """
        self._to(input_ids.device)
        levels = self.trie.levels
        window = input_ids[:, -levels:]  # (R, w), w = min(L, S)
        outside = window >= len(self.token_level)
        clamped = window.clamp(max=len(self.token_level) - 1)
        level = self.token_level[clamped].masked_fill(outside, -1)
        code = self.token_code[clamped].masked_fill(outside, -1)
        # Length of the trailing run of SID tokens: cumulative product from the right.
        depth = (level >= 0).flip(1).long().cumprod(1).sum(1)
        start = window.shape[1] - depth  # (R,) column of the run's first token
        nodes = self.trie.roots(input_ids.shape[0])
        for t in range(min(levels, window.shape[1])):
            col = (start + t).clamp(max=window.shape[1] - 1)[:, None]
            tok_level, tok_code = level.gather(1, col)[:, 0], code.gather(1, col)[:, 0]
            tok_code = torch.where(tok_level == t, tok_code, -1)  # `<b_3>` where `<a_.>` belongs: not a prefix
            nodes = torch.where(depth > t, self.trie.step(t, nodes, tok_code), nodes)
        return depth, nodes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """(R, S) ids, (R, V) scores -> (R, V) scores with every disallowed token at -inf."""
        depth, nodes = self.prefix_state(input_ids)
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for t, (first, size) in enumerate(zip(self.vocab.first_ids, self.trie.level_sizes, strict=True)):
            at_level = torch.where(depth == t, nodes, -1)
            allowed[:, first : first + size] = self.trie.children(t, at_level) >= 0
        finished = (depth == self.trie.levels) | (nodes < 0)
        allowed[:, self.eos_token_ids] |= finished[:, None]
        return scores.masked_fill(~allowed, float("-inf"))
