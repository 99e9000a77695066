"""A tiny, hand-built run directory (catalog, sid, data) and a tiny base model folder, for the trainer tests."""

import time
from pathlib import Path

from align.run_dir import write_json, write_jsonl, write_manifest
from align.testing import tiny_causal_lm, tiny_tokenizer
from align.tokens import format_sid

COLORS = ["red", "blue", "green"]
KINDS = ["shoe", "hat", "bag", "cup"]
LEVEL_SIZES = [3, 4]


def catalog() -> list[dict]:
    """12 items; item i has SID (i // 4, i % 4) and title "<color> <kind>"."""
    return [
        {"item_id": f"i{c * 4 + k}", "title": f"{color} {kind}", "description": "", "brand": "", "categories": ""}
        for c, color in enumerate(COLORS)
        for k, kind in enumerate(KINDS)
    ]


def sid_map() -> dict:
    return {"levels": 2, "level_sizes": LEVEL_SIZES, "items": {f"i{i}": [i // 4, i % 4] for i in range(12)}}


def make_base_model(folder: Path, *, tied: bool = True) -> Path:
    """Save a random tiny Llama-style LM and a word-level tokenizer that knows the catalog's words.

    Llama, not Qwen2: for a folder whose config says qwen2, transformers' AutoTokenizer builds a Qwen2Tokenizer
    (byte-level BPE) from the vocab instead of the saved word-level tokenizer, which then drops every word.
    """
    tokenizer = tiny_tokenizer([*COLORS, *KINDS])
    model = tiny_causal_lm(len(tokenizer), arch="llama")
    if not tied:
        from transformers import LlamaForCausalLM

        config = model.config
        config.tie_word_embeddings = False
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_run(root: Path, *, sft_repeat: int = 4) -> Path:
    """catalog/, sid/ and data/ with manifests: SFT teaches "item <title>" -> SID; GRPO asks the same."""
    items, sids = catalog(), sid_map()
    stages = {"catalog": {"items.jsonl": items}, "sid": {}, "data": {}}
    for stage in stages:
        (root / stage).mkdir(parents=True)
    write_jsonl(root / "catalog" / "items.jsonl", items)
    write_json(root / "sid" / "sid_map.json", sids)
    sft, grpo = [], []
    for item in items:
        target = format_sid(sids["items"][item["item_id"]])
        prompt = [{"role": "user", "content": f"item {item['title']} ?"}]
        sft.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": target}],
                "task": "t2s",
                "target": target,
            }
        )
        grpo.append({"prompt": prompt, "task": "t2s", "target": target, "target_item": item["item_id"]})
    write_jsonl(root / "data" / "sft.jsonl", sft * sft_repeat)
    write_jsonl(root / "data" / "grpo.jsonl", grpo)
    prompts = {"seqrec": "History: {history_sids}. Next item?", "titles2sid": "History: {history_titles}. Next item?"}
    write_json(root / "data" / "prompting.json", {"system_prompt": "", "max_history": 5, "prompts": prompts})
    for stage in stages:
        write_manifest(root / stage, stage, started=time.time())
    return root
