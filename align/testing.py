"""Tiny, offline stand-ins for a tokenizer and a causal LM, for tests and smoke runs.

They go through the same code paths as real checkpoints (chat template, added tokens, PEFT, TRL), in seconds.
"""

from collections.abc import Iterable

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(words: Iterable[str] = ()):
    """Word-level tokenizer built in memory, with pad/eos/unk and a ChatML-style chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["system", "user", "assistant", "item", "items", "next", "the", "a", "and", "what", "which", ",", ".", "?"]
    vocab: dict[str, int] = {}
    for word in [*SPECIAL, *base, *words]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>", bos_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(vocab_size: int, *, seed: int = 0, arch: str = "qwen2", hidden_size: int = 32, layers: int = 2):
    """Random-init Qwen2- or Llama-style causal LM with tied embeddings: a few thousand parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
