"""SID tokens in a language model's vocabulary.

A Semantic ID is a short code, one integer per level, written as one token per level: `<a_12><b_3><c_7>`
(letter = level, the format of MiniOneRec's released SIDs). The tokens are added as *normal* tokens: TRL
decodes completions with `skip_special_tokens=True`, so special SID tokens would vanish before rewards see
them. Each level's tokens get contiguous ids, so "which code is this token" is a subtraction.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def format_sid(codes: Sequence[int]) -> str:
    """(12, 3, 7) -> "<a_12><b_3><c_7>"."""
    return "".join(sid_token(level, int(code)) for level, code in enumerate(codes))


def parse_sid(text: str, levels: int | None = None) -> tuple[int, ...] | None:
    """"<a_12><b_3><c_7>" -> (12, 3, 7); None unless the whole string (stripped) is one well-formed SID."""
    text = text.strip()
    codes, pos = [], 0
    for match in _TOKEN_RE.finditer(text):
        if match.start() != pos or match.group(1) != LEVEL_LETTERS[len(codes)]:
            return None
        codes.append(int(match.group(2)))
        pos = match.end()
    if pos != len(text) or not codes or (levels is not None and len(codes) != levels):
        return None
    return tuple(codes)


@dataclass(frozen=True)
class SIDVocab:
    """Where the SID tokens sit in a tokenizer: level l, code c has token id `first_ids[l] + c`."""

    level_sizes: tuple[int, ...]
    first_ids: tuple[int, ...]

    @property
    def levels(self) -> int:
        return len(self.level_sizes)

    def tokens(self) -> list[str]:
        return [sid_token(level, code) for level, size in enumerate(self.level_sizes) for code in range(size)]

    def ids(self, codes: Sequence[int]) -> list[int]:
        """Token ids spelling the SID `codes`."""
        if len(codes) != self.levels:
            raise ValueError(f"a SID has {self.levels} codes, got {len(codes)}")
        return [self.first_ids[level] + int(code) for level, code in enumerate(codes)]

    def all_ids(self) -> list[int]:
        pairs = zip(self.first_ids, self.level_sizes, strict=True)
        return [first + code for first, size in pairs for code in range(size)]

    def codes(self, token_ids: Sequence[int]) -> tuple[int, ...] | None:
        """The SID spelled by the first `levels` token ids, or None if they do not spell a whole SID."""
        if len(token_ids) < self.levels:
            return None
        out = []
        for level, tid in enumerate(token_ids[: self.levels]):
            code = int(tid) - self.first_ids[level]
            if not 0 <= code < self.level_sizes[level]:
                return None
            out.append(code)
        return tuple(out)

    def to_dict(self) -> dict:
        return {"level_sizes": list(self.level_sizes), "first_ids": list(self.first_ids)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "SIDVocab":
        return cls(tuple(d["level_sizes"]), tuple(d["first_ids"]))

    @classmethod
    def from_tokenizer(cls, tokenizer, level_sizes: Sequence[int]) -> "SIDVocab":
        """Find already-added SID tokens in a tokenizer; raises if any is missing or a level is not contiguous."""
        first_ids = []
        for level, size in enumerate(level_sizes):
            tokens = [sid_token(level, code) for code in range(size)]
            ids = tokenizer.convert_tokens_to_ids(tokens)
            if ids[0] is None or ids[0] == tokenizer.unk_token_id or ids != list(range(ids[0], ids[0] + size)):
                raise ValueError(
                    f"tokenizer has no contiguous block of SID tokens {tokens[0]}..{tokens[-1]}: "
                    "add them with align.tokens.add_sid_tokens"
                )
            first_ids.append(ids[0])
        return cls(tuple(int(s) for s in level_sizes), tuple(first_ids))


def add_sid_tokens(
    model,
    tokenizer,
    level_sizes: Sequence[int],
    *,
    code_texts: Sequence[Mapping[int, Sequence[str]]] | None = None,
) -> SIDVocab:
    """Add SID tokens as normal tokens, grow the embeddings if needed and initialise the new rows.

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer; modified in place.
        level_sizes: codes per level.
        code_texts: per level, code -> texts of the items under that code. A new row starts as the mean input
            embedding of those texts' tokens, so `<a_12>` begins near what the items under code 12 are about.
            Codes without texts (and every code when None) start at the mean of all existing rows, with the
            existing rows' spread, rather than at random.

    Returns:
        The SIDVocab that locates the new tokens.
    """
    tokens = [sid_token(level, code) for level, size in enumerate(level_sizes) for code in range(size)]
    known = set(tokenizer.get_vocab())
    clash = [t for t in tokens if t in known]
    if clash:
        raise ValueError(f"tokenizer already has SID tokens ({clash[0]}, ...): load it with SIDVocab.from_tokenizer")
    tokenizer.add_tokens(tokens, special_tokens=False)
    vocab = SIDVocab.from_tokenizer(tokenizer, level_sizes)

    embeddings = model.get_input_embeddings()
    old_rows = embeddings.weight.shape[0]
    # Some checkpoints carry more rows than tokens (padding rows): never shrink, grow only when needed.
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        base = weight[: min(old_rows, vocab.first_ids[0])].float()
        mean, std = base.mean(0), base.std(0)
        generator = torch.Generator().manual_seed(0)
        for level, size in enumerate(level_sizes):
            texts = code_texts[level] if code_texts is not None else {}
            for code in range(size):
                row = _mean_text_embedding(texts.get(code, ()), tokenizer, base)
                if row is None:
                    row = mean + 0.1 * std * torch.randn(mean.shape, generator=generator)
                weight[vocab.first_ids[level] + code] = row.to(weight.dtype)
        output = model.get_output_embeddings()
        if output is not None and output.weight.data_ptr() != weight.data_ptr():
            # Untied head: start the new output rows from the same vectors, so the model can already point at them.
            output.weight[vocab.first_ids[0] : vocab.first_ids[-1] + level_sizes[-1]] = weight[
                vocab.first_ids[0] : vocab.first_ids[-1] + level_sizes[-1]
            ].to(output.weight.dtype)
    return vocab


def _mean_text_embedding(
    texts: Sequence[str], tokenizer, base: torch.Tensor, max_texts: int = 64
) -> torch.Tensor | None:
    ids = [i for text in list(texts)[:max_texts] for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    ids = [i for i in ids if i < base.shape[0]]
    if not ids:
        return None
    return base[torch.tensor(ids)].mean(0)


def sid_table(sid_map: Mapping) -> tuple[list[str], torch.Tensor]:
    """A sid_map.json object -> (item ids, (N, L) int64 codes), rows in the same order."""
    item_ids = list(sid_map["items"])
    codes = torch.tensor([sid_map["items"][item] for item in item_ids], dtype=torch.int64)
    return item_ids, codes.reshape(len(item_ids), int(sid_map["levels"]))
