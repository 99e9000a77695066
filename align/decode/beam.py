"""Top-K catalog items from a causal LM: a beam search built for Semantic IDs.

`generate(num_beams=K)` copies each prompt K times before the prefill and scores the whole vocabulary for every
beam, with the catalog check done per beam in Python. Here each prompt is prefilled once, its KV cache is copied
to the beams only after the first SID level, a SID of L levels costs L - 1 one-token steps, and each step's
top-K is one vectorised `topk` over (beam x allowed code) per prompt, the trie held as tensors on the model's
device. Scores are the same full-vocabulary log-probabilities as HF beam search with `SIDConstraint`, so both
give the same items in the same order. The search knows tokens only through `SIDVocab`: ids in, ids out.
"""

import inspect
import logging
from dataclasses import dataclass

import torch

from align.decode.trie import SIDTrie
from align.tokens import SIDVocab

logger = logging.getLogger(__name__)


@dataclass
class SIDBeams:
    """Decoded SIDs per prompt; K slots each, best first.

    Attributes:
        items: (B, K) int64 catalog row (into the trie's codes), -1 where fewer than K items exist.
        codes: (B, K, L) int64 SID codes, -1 for padding.
        scores: (B, K) float, sum of the L SID tokens' log-probs over the full vocabulary, -inf for padding.
        token_logprobs: (B, K, L) float, per-token log-probs of each SID, -inf for padding.
    """

    items: torch.Tensor
    codes: torch.Tensor
    scores: torch.Tensor
    token_logprobs: torch.Tensor


class _Stepper:
    """Runs the model: one prefill per prompt, then one token per row, the KV cache following the rows."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask must be equal (B, T) tensors")
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("input_ids must be left-padded (every prompt's last token real): set padding_side='left'")
        self.model = model
        self.mask = attention_mask.long()
        # Explicit positions: with left padding a prompt's first real token is position 0.
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = positions[:, -1] + 1  # (B,)
        self.cache = None
        self.logprobs = self._forward(input_ids, positions)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Run the model on new tokens; returns (R, V) float32 log-probs of each row's next token."""
        kwargs = {}
        if _accepts_logits_to_keep(self.model):
            kwargs["logits_to_keep"] = 1  # the prefill would otherwise build (B, T, V) logits
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
            **kwargs,
        )
        self.cache = out.past_key_values
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def advance(self, token_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Continue row `rows[i]` (default: row i) with token `token_ids[i]`; rows may repeat or drop.

        Args:
            token_ids: (R',) int64 next token of each new row.
            rows: (R',) int64 indices into the current rows, or None to keep them as they are.

        Returns:
            (R', V) float32 log-probs of the token after that.
        """
        if rows is not None:
            self.cache.reorder_cache(rows)
            self.mask = self.mask[rows]
            self.next_position = self.next_position[rows]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(token_ids), 1)], dim=1)
        self.logprobs = self._forward(token_ids[:, None], self.next_position[:, None])
        self.next_position = self.next_position + 1
        return self.logprobs


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the HF model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def sid_beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    vocab: SIDVocab,
    num_beams: int,
    k: int | None = None,
) -> SIDBeams:
    """Constrained beam search over catalog SIDs; the K best distinct items per prompt.

    Exactly HF beam search with `SIDConstraint` and `max_new_tokens=L`: the same beams survive each level, with the
    same full-vocabulary log-prob scores. Works for any HF causal LM (or PEFT wrapper), any dtype and device.

    Args:
        model: a causal LM; its train/eval mode is left as it is.
        input_ids: (B, T) LEFT-padded prompts, ending in a non-SID token (e.g. the assistant header).
        attention_mask: (B, T) 1 for real tokens.
        trie: the catalog; moved to the model inputs' device.
        vocab: where the SID tokens sit.
        num_beams: beams kept at each level.
        k: items to return, at most num_beams (default num_beams).

    Returns:
        SIDBeams with K = min(k or num_beams, num_beams) slots, padded with -1 / -inf when fewer items are reachable.
    """
    trie.check_fits(vocab.level_sizes)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    k = min(k or num_beams, num_beams)
    trie = trie.to(input_ids.device)
    batch = input_ids.shape[0]
    stepper = _Stepper(model, input_ids, attention_mask)
    logprobs = stepper.logprobs  # (R, V), R = batch * width rows
    width = 1
    nodes = trie.roots(batch)  # (R,) trie state of each beam
    scores = logprobs.new_zeros(batch, 1)  # (B, width)
    token_lp = logprobs.new_zeros(batch, 0)  # (R, level)
    codes = nodes.new_zeros(batch, 0)  # (R, level)
    for level, (first, size) in enumerate(zip(vocab.first_ids, trie.level_sizes, strict=True)):
        child = trie.children(level, nodes)  # (R, K_t)
        step_lp = logprobs[:, first : first + size]  # (R, K_t)
        candidates = (scores.reshape(-1, 1) + step_lp).masked_fill(child < 0, float("-inf"))
        candidates = candidates.view(batch, width * size)
        new_width = min(num_beams, width * size)
        scores, flat = candidates.topk(new_width, dim=1)  # (B, W'), sorted best first
        rows = (torch.arange(batch, device=flat.device)[:, None] * width + flat // size).view(-1)  # (R',)
        code = (flat % size).view(-1)
        nodes = child.view(batch, -1).gather(1, flat).view(-1)
        token_lp = torch.cat([token_lp[rows], step_lp.reshape(batch, -1).gather(1, flat).view(-1, 1)], dim=1)
        codes = torch.cat([codes[rows], code[:, None]], dim=1)
        width = new_width
        if level + 1 < trie.levels:
            logprobs = stepper.advance(first + code, rows)
    return _pack(trie, nodes, codes, token_lp, scores, k)


def _pack(
    trie: SIDTrie, nodes: torch.Tensor, codes: torch.Tensor, token_lp: torch.Tensor, scores: torch.Tensor, k: int
) -> SIDBeams:
    """(R,) leaf nodes, (R, L) codes and log-probs, (B, W) scores -> SIDBeams with K slots, dead beams padded."""
    batch, width = scores.shape
    dead = nodes < 0
    items = trie.leaf_item(nodes).view(batch, width)
    codes = codes.masked_fill(dead[:, None], -1).view(batch, width, -1)
    token_lp = token_lp.masked_fill(dead[:, None], float("-inf")).view(batch, width, -1)
    scores = scores.masked_fill(dead.view(batch, width), float("-inf"))
    if width < k:
        pad = k - width
        items = torch.nn.functional.pad(items, (0, pad), value=-1)
        scores = torch.nn.functional.pad(scores, (0, pad), value=float("-inf"))
        codes = torch.nn.functional.pad(codes, (0, 0, 0, pad), value=-1)
        token_lp = torch.nn.functional.pad(token_lp, (0, 0, 0, pad), value=float("-inf"))
    return SIDBeams(items[:, :k], codes[:, :k], scores[:, :k], token_lp[:, :k])


@torch.no_grad()
def sample_sids(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SIDTrie,
    vocab: SIDVocab,
    num_samples: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> SIDBeams:
    """Constrained sampling: `num_samples` independent catalog SIDs per prompt (duplicates allowed).

    Each level samples from the model's distribution at `temperature`, renormalised over the codes that continue a
    catalog SID (what `generate(do_sample=True)` with `SIDConstraint` does). The prompt is prefilled once.

    Args:
        input_ids, attention_mask: (B, T) LEFT-padded prompts, as for `sid_beam_search`.
        num_samples: S samples per prompt.
        temperature: > 0; sharpens (< 1) or flattens (> 1) the sampling distribution.
        generator: for reproducible draws; must live on the inputs' device.

    Returns:
        SIDBeams with K = S slots per prompt, sorted by score; scores and token_logprobs are log-probs at
        temperature 1 over the full vocabulary.
    """
    trie.check_fits(vocab.level_sizes)
    if num_samples < 1 or temperature <= 0:
        raise ValueError(f"need num_samples >= 1 and temperature > 0, got {num_samples} and {temperature}")
    trie = trie.to(input_ids.device)
    batch = input_ids.shape[0]
    stepper = _Stepper(model, input_ids, attention_mask)
    rows = torch.arange(batch, device=input_ids.device).repeat_interleave(num_samples)  # (R,) R = B * S
    logprobs = stepper.logprobs[rows]
    nodes = trie.roots(len(rows))
    token_lp, codes = [], []
    for level, (first, size) in enumerate(zip(vocab.first_ids, trie.level_sizes, strict=True)):
        child = trie.children(level, nodes)  # (R, K_t)
        step_lp = logprobs[:, first : first + size]
        # lp / T differs from logits / T by a per-row constant, which the softmax removes.
        probs = torch.softmax((step_lp / temperature).masked_fill(child < 0, float("-inf")), dim=-1)
        code = torch.multinomial(probs, 1, generator=generator)  # (R, 1)
        nodes = child.gather(1, code)[:, 0]
        token_lp.append(step_lp.gather(1, code))
        codes.append(code)
        if level + 1 < trie.levels:
            # First step: copy each prompt's cache to its S rows; afterwards rows keep their place.
            logprobs = stepper.advance(first + code[:, 0], rows if level == 0 else None)
    token_lp, codes = torch.cat(token_lp, dim=1), torch.cat(codes, dim=1)
    scores, order = token_lp.sum(1).view(batch, num_samples).sort(dim=1, descending=True)
    flat = (order + torch.arange(batch, device=order.device)[:, None] * num_samples).view(-1)
    return _pack(trie, nodes[flat], codes[flat], token_lp[flat], scores, num_samples)


def topk_items(
    model,
    tokenizer,
    prompts: list[list[dict]],
    trie: SIDTrie,
    vocab: SIDVocab,
    k: int,
    num_beams: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> SIDBeams:
    """Top-K catalog items for chat prompts, batched.

    Each prompt (a list of chat messages) is rendered with the tokenizer's chat template and the generation prompt,
    so it ends in the assistant header. Prompts are batched by length (less padding), left-padded by hand and
    decoded with `sid_beam_search`; results come back in the order of `prompts`.

    Args:
        prompts: P conversations, e.g. [[{"role": "user", "content": "..."}], ...].
        k: items per prompt; num_beams defaults to k.
        batch_size: prompts per model call.

    Returns:
        SIDBeams with P rows on the model's device.
    """
    from tqdm.auto import tqdm

    num_beams = num_beams or k
    device = model.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    token_ids = [
        tokenizer(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        for messages in prompts
    ]
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    parts = []
    for start in tqdm(range(0, len(order), batch_size), desc="top-k items", unit="batch", disable=not progress):
        batch = [token_ids[i] for i in order[start : start + batch_size]]
        width = max(map(len, batch))
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        parts.append(sid_beam_search(model, input_ids, attention_mask, trie, vocab, num_beams, k))
    if not parts:
        size = min(k, num_beams)
        return SIDBeams(
            torch.empty(0, size, dtype=torch.int64, device=device),
            torch.empty(0, size, trie.levels, dtype=torch.int64, device=device),
            torch.empty(0, size, device=device),
            torch.empty(0, size, trie.levels, device=device),
        )
    inverse = torch.empty(len(order), dtype=torch.int64)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    inverse = inverse.to(device)
    return SIDBeams(*(torch.cat([getattr(p, f) for p in parts])[inverse] for f in SIDBeams.__dataclass_fields__))
