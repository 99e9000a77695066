"""Constrained top-K decoding: `sid_beam_search` against HF `generate` with a MiniOneRec-style processor.

    python benchmarks/decode.py                                   # CPU: SmolLM2-135M shape, 20 beams
    python benchmarks/decode.py --device cuda --shape qwen2.5-0.5b --beams 50 --prompts 16 --prompt-len 128
    python benchmarks/decode.py --model path/to/model.gguf        # adds a run on trained weights

Prints one JSON line per setting. A setting is one set of weights: "random" (random init), "peaked" (random init
with the final norm scaled up, so the next-token distribution is as confident as a trained model's) and, with
--model, "trained". Per setting, four decoders produce the top-K SIDs of the same left-padded prompts over the
same synthetic catalog (levels x codebook codes, heavy prefix sharing):

    reference       `generate(num_beams=K)` + a per-beam Python prefix processor (a dict from the generated prefix
                    to allowed token ids, looped over batch x beams), as MiniOneRec does it
    generate        unconstrained `generate(num_beams=K)` for L tokens: the cost of plain beam search
    constraint      `generate(num_beams=K)` + align's vectorised `SIDConstraint`
    sid_beam_search align's dedicated search: one prefill per prompt, L - 1 one-token steps

Speed is prompts per second, the median of --repeats timed runs (after one warm-up run of the model). `match`
says whether each decoder's top-K lists equal the reference's (same items, same order, a swap allowed only
between items whose scores tie within --tol).
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor

from align.decode.beam import sid_beam_search
from align.decode.processor import SIDConstraint
from align.decode.trie import SIDTrie
from align.tokens import SIDVocab

SHAPES = {
    # SmolLM2-135M: Llama, tied embeddings.
    "smollm2-135m": dict(
        arch="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, rms_norm_eps=1e-5,
    ),
    # Qwen2.5-0.5B: Qwen2, tied embeddings, 152k vocabulary.
    "qwen2.5-0.5b": dict(
        arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
}  # fmt: skip


class PrefixDictProcessor(LogitsProcessor):
    """The reference: MiniOneRec-style constraint, a Python dict lookup per beam per step."""

    def __init__(self, allowed_after: dict[tuple[int, ...], list[int]], prompt_len: int, num_beams: int) -> None:
        self.allowed_after = allowed_after
        self.prompt_len = prompt_len
        self.num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for batch_id, beams in enumerate(input_ids.view(-1, self.num_beams, input_ids.shape[-1])):
            for beam_id, sent in enumerate(beams):
                allowed = self.allowed_after.get(tuple(sent[self.prompt_len :].tolist()), [])
                mask[batch_id * self.num_beams + beam_id, allowed] = 0
        return scores + mask


def prefix_dict(codes: torch.Tensor, vocab: SIDVocab, eos_id: int) -> dict[tuple[int, ...], list[int]]:
    """Generated SID token ids so far -> allowed next token ids (EOS after a whole SID)."""
    allowed: dict[tuple[int, ...], set[int]] = {}
    for row in codes.tolist():
        ids = vocab.ids(row)
        for t in range(len(ids)):
            allowed.setdefault(tuple(ids[:t]), set()).add(ids[t])
        allowed[tuple(ids)] = {eos_id}
    return {key: sorted(value) for key, value in allowed.items()}


def synthetic_catalog(num_items: int, levels: int, codebook: int, seed: int) -> torch.Tensor:
    """(N, L) unique codes; skewed first levels so many items share prefixes, as residual quantizers produce."""
    gen = torch.Generator().manual_seed(seed)
    rows: set[tuple[int, ...]] = set()
    while len(rows) < num_items:
        u = torch.rand(num_items, levels, generator=gen)
        u[:, : levels - 1] **= 2.0  # low codes more popular at the upper levels
        rows.update(map(tuple, (u * codebook).long().clamp(max=codebook - 1).tolist()))
    return torch.tensor(sorted(rows)[:num_items])[torch.randperm(num_items, generator=gen)]


def build_model(args, setting: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if setting == "trained":
        path = Path(args.model)
        if path.suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.to(device).eval()
    shape = dict(SHAPES[args.shape])
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape.pop("arch")]
    config = config_cls(**shape, tie_word_embeddings=True, max_position_embeddings=4096, pad_token_id=0)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if setting == "peaked":
        with torch.no_grad():
            model.model.norm.weight.mul_(args.peak_scale)
    return model.eval()


def prompts(num: int, max_len: int, vocab_limit: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of max_len / 2 .. max_len non-SID tokens, the longest exactly max_len."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max_len // 2, max_len + 1, (num,), generator=gen)
    lengths[0] = max_len
    ids = torch.zeros(num, max_len, dtype=torch.int64)
    mask = torch.zeros(num, max_len, dtype=torch.int64)
    for row, n in enumerate(lengths.tolist()):
        ids[row, max_len - n :] = torch.randint(1, vocab_limit, (n,), generator=gen)
        mask[row, max_len - n :] = 1
    return ids.to(device), mask.to(device)


def timed(fn, device: torch.device):
    """(seconds, result) of one run."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def same_up_to_ties(items, scores, ref_items, ref_scores, tol: float) -> bool:
    """Equal ranked lists, except swaps between positions whose scores agree within tol."""
    if items.shape != ref_items.shape:
        return False
    differ = items != ref_items
    return bool(((scores - ref_scores).abs()[differ] <= tol).all())


def run_setting(args, setting: str, device: torch.device, dtype: torch.dtype) -> dict:
    model = build_model(args, setting, device, dtype)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    levels, codebook, beams = args.levels, args.codebook, args.beams
    first_sid = vocab_size - levels * codebook  # the last ids of the vocabulary play the SID tokens
    vocab = SIDVocab((codebook,) * levels, tuple(first_sid + level * codebook for level in range(levels)))
    codes = synthetic_catalog(args.items, levels, codebook, args.seed)
    trie = SIDTrie.from_codes(codes, vocab.level_sizes).to(device)
    eos_id = 1  # never reached: max_new_tokens = L ends the search before EOS
    ids, mask = prompts(args.prompts, args.prompt_len, first_sid, args.seed, device)
    offsets = torch.tensor(vocab.first_ids, device=device)

    def hf(processor: LogitsProcessor | None):
        out = model.generate(
            input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams, do_sample=False,
            max_new_tokens=levels, length_penalty=0.0, early_stopping=False, top_k=None, top_p=None,
            logits_processor=[processor] if processor else None, pad_token_id=0, eos_token_id=eos_id,
            output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
        generated = out.sequences[:, ids.shape[1] : ids.shape[1] + levels]
        items = trie.item_index(generated - offsets).view(len(ids), beams)
        return items, out.sequences_scores.view(len(ids), beams).float()

    def ours():
        found = sid_beam_search(model, ids, mask, trie, vocab, beams)
        return found.items, found.scores

    decoders = {
        "reference": lambda: hf(PrefixDictProcessor(prefix_dict(codes, vocab, eos_id), ids.shape[1], beams)),
        "generate": lambda: hf(None),
        "constraint": lambda: hf(SIDConstraint(trie, vocab, eos_id)),
        "sid_beam_search": ours,
    }
    seconds, results, match = {name: [] for name in decoders}, {}, {}
    with torch.no_grad():
        ours()  # warm-up: first-call allocations and kernel choices
        # Round robin, so a slow spell of a shared machine slows every decoder alike.
        for _ in range(args.repeats):
            for name, fn in decoders.items():
                took, results[name] = timed(fn, device)
                seconds[name].append(took)
    speed = {name: round(len(ids) / statistics.median(times), 3) for name, times in seconds.items()}
    ref_items, ref_scores = results["reference"]
    for name in ("constraint", "sid_beam_search"):
        items, scores = results[name]
        match[name] = same_up_to_ties(items, scores, ref_items, ref_scores, args.tol)
    return {
        "setting": setting,
        "device": device_name(device),
        "model": args.model if setting == "trained" else f"{args.shape} (random weights)",
        "dtype": str(dtype).removeprefix("torch."),
        "beams": beams,
        "prompts": len(ids),
        "prompt_len": args.prompt_len,
        "items": args.items,
        "levels": levels,
        "codebook": codebook,
        "prompts_per_s": speed,
        "speedup_vs_reference": round(speed["sid_beam_search"] / speed["reference"], 2),
        "speedup_vs_generate": round(speed["sid_beam_search"] / speed["generate"], 2),
        "match": match,
        "exact_order": bool(torch.equal(results["sid_beam_search"][0], ref_items)),
        "max_score_diff": float((results["sid_beam_search"][1] - ref_scores).abs().max()),
        "tol": args.tol,
        "torch": torch.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Model and device
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m", help="random-weights model shape")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--model", help="trained weights for the 'trained' setting: a model folder or a .gguf file")
    parser.add_argument(
        "--settings", nargs="+", choices=["random", "peaked", "trained"],
        help="weights to run (default: random peaked, plus trained when --model is given)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--peak-scale", type=float, default=8.0, help="final-norm scale of the 'peaked' setting")
    # Search and catalog
    parser.add_argument("--beams", type=int, default=20, help="beams = items returned per prompt")
    parser.add_argument("--prompts", type=int, default=3, help="prompts per batch")
    parser.add_argument("--prompt-len", type=int, default=96, help="longest prompt; others are 1/2 to 1 of it")
    parser.add_argument("--items", type=int, default=3686, help="catalog size")
    parser.add_argument("--levels", type=int, default=3, help="SID length")
    parser.add_argument("--codebook", type=int, default=256, help="codes per level")
    # Measurement
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per decoder (median)")
    parser.add_argument("--tol", type=float, help="scores closer than this tie (default 1e-4; 5e-2 for bfloat16)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.tol is None:
        # bf16 logits differ in the 3rd digit between batch layouts (B vs B x beams rows): a looser tie band.
        args.tol = 1e-4 if dtype == torch.float32 else 5e-2
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.settings or ["random", "peaked"] + (["trained"] if args.model else [])
    if "trained" in settings and not args.model:
        raise SystemExit("the 'trained' setting needs --model PATH (a model folder or a .gguf file)")
    for setting in settings:
        print(json.dumps(run_setting(args, setting, device, dtype)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
