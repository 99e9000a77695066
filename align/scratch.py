"""From-scratch SID model: the TIGER-style reference that shows what language pretraining adds.

A small randomly initialised decoder (a Llama config from transformers) whose whole vocabulary is the run's SID
tokens plus padding and a start token, trained only on SID sequences: each train row of <run>/catalog/train.jsonl
becomes `<s> SID(h_1) ... SID(h_n) SID(target)`, with the loss on the target's tokens. It reads the same SIDs, the
same split and decodes with the same constrained beam search (`align.decode.sid_beam_search`) as the LM pipeline;
only the pretrained model and the words are missing. The epoch is picked by NDCG@10 on the validation rows, as
for SASRec. `align eval` then reports it as the baseline row `sid-scratch`.

Writes <run>/scratch/: the model (config.json, model.safetensors), scratch.json (the SID vocabulary, best epoch,
validation metrics) and sid_map.json (the SIDs it was trained on).

    align scratch --run_dir runs/x
    align scratch --run_dir runs/x --hidden 256 --layers 4 --epochs 40
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from align.best_epoch import BestEpoch, resolve_device
from align.run_dir import RunDir, read_json, read_jsonl, write_json
from align.tokens import SIDVocab

logger = logging.getLogger(__name__)

PAD_ID = 0
BOS_ID = 1  # every sequence starts with it, so an empty history still has a prompt
FIRST_SID_ID = 2
SELECTION_K = 10


@dataclass
class ScratchArgs:
    run_dir: str = field(
        default="runs/demo", metadata={"help": "Run directory: reads catalog/ and sid/, writes scratch/."}
    )
    hidden: int = field(default=128, metadata={"help": "Width of the decoder."})
    layers: int = field(default=4, metadata={"help": "Decoder layers."})
    heads: int = field(default=4, metadata={"help": "Attention heads (must divide hidden)."})
    max_history: int = field(default=10, metadata={"help": "The latest items of a history the model reads."})
    dropout: float = field(default=0.1, metadata={"help": "Attention dropout."})
    epochs: int = field(
        default=50, metadata={"help": "Most epochs over the train rows (early stopping may end sooner)."}
    )
    patience: int = field(
        default=5, metadata={"help": "Stop after this many epochs without a better validation NDCG@10 (0 = never)."}
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=128, metadata={"help": "Train rows per step."})
    num_beams: int = field(default=10, metadata={"help": "Beams of the constrained search used for validation."})
    max_valid_users: int = field(
        default=1000, metadata={"help": "Validate each epoch on a seeded subset of this many valid rows (0 = all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, shuffling and the validation subset."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "max_history", "epochs", "batch_size", "num_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"--heads ({self.heads}) must divide --hidden ({self.hidden})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


def sid_vocab(level_sizes: Sequence[int]) -> SIDVocab:
    """The scratch model's vocabulary: padding, start, then each level's codes back to back."""
    firsts, first = [], FIRST_SID_ID
    for size in level_sizes:
        firsts.append(first)
        first += size
    return SIDVocab(tuple(level_sizes), tuple(firsts))


def build_model(vocab: SIDVocab, args: ScratchArgs):
    """A randomly initialised LlamaForCausalLM over the SID vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=FIRST_SID_ID + sum(vocab.level_sizes),
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=(args.max_history + 1) * vocab.levels + 8,
        attention_dropout=args.dropout,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


class SequenceEncoder:
    """Item-id histories -> token ids of the scratch model (items without a SID are dropped and counted)."""

    def __init__(self, sid_map: dict, vocab: SIDVocab, max_history: int) -> None:
        self.vocab = vocab
        self.max_history = max_history
        self.ids = {item: vocab.ids(codes) for item, codes in sid_map["items"].items()}

    def prompt(self, history: Sequence[str]) -> tuple[list[int], int]:
        known = [item for item in history if item in self.ids]
        tokens = [BOS_ID] + [t for item in known[-self.max_history :] for t in self.ids[item]]
        return tokens, len(history) - len(known)

    def train_example(self, row: dict, path: Path) -> tuple[list[int], list[int]]:
        """(input_ids, labels) with the loss on the target's tokens only."""
        if row["target"] not in self.ids:
            raise ValueError(
                f"{path}: target {row['target']!r} of user {row.get('user_id')!r} has no SID: "
                "rerun `align sids` after `align prepare` so the catalog and the SIDs agree"
            )
        prompt, _ = self.prompt(row["history"])
        target = self.ids[row["target"]]
        return prompt + target, [-100] * len(prompt) + target


def _right_pad(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.tensor([ids + [PAD_ID] * (width - len(ids)) for ids, _ in batch])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class ScratchScorer:
    """A trained scratch model over a fixed catalog: the top-k items for item-id histories."""

    def __init__(self, model, sid_map: dict, vocab: SIDVocab, max_history: int, device: str = "cpu",
                 batch_size: int = 256) -> None:
        from align.decode.trie import SIDTrie
        from align.tokens import sid_table

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.encoder = SequenceEncoder(sid_map, vocab, max_history)
        self.item_ids, codes = sid_table(sid_map)
        self.trie = SIDTrie.from_codes(codes, vocab.level_sizes).to(self.device)
        self.vocab = vocab
        self.batch_size = batch_size

    @torch.no_grad()
    def rank(self, histories: Sequence[Sequence[str]], k: int, num_beams: int | None = None) -> list[list[str]]:
        """The top-k catalog items (constrained beam search with max(k, num_beams) beams) for each history."""
        from align.decode.beam import sid_beam_search
        from align.train.grpo import _left_pad

        beams = max(k, num_beams or k)
        out: list[list[str]] = []
        unknown = 0
        for start in range(0, len(histories), self.batch_size):
            prompts = []
            for history in histories[start : start + self.batch_size]:
                tokens, dropped = self.encoder.prompt(history)
                prompts.append(tokens)
                unknown += dropped
            input_ids, mask = _left_pad(prompts, PAD_ID, self.device)
            found = sid_beam_search(self.model, input_ids, mask, self.trie, self.vocab, num_beams=beams, k=k)
            out += [[self.item_ids[i] for i in row if i >= 0] for row in found.items.tolist()]
        if unknown:
            logger.warning("sid-scratch: dropped %d history items that have no SID", unknown)
        return out


def _valid_metrics(scorer: ScratchScorer, rows: list[dict], num_beams: int) -> dict[str, float]:
    from align.metrics import ranking_metrics

    ranked = scorer.rank([row["history"] for row in rows], SELECTION_K, num_beams)
    metrics = ranking_metrics(ranked, [row["target"] for row in rows], ks=[SELECTION_K])
    return {key: round(value, 4) for key, value in metrics.items()}


def train_scratch(sid_map: dict, train: list[dict], valid: list[dict], args: ScratchArgs,
                  paths: tuple[Path, Path]) -> tuple[object, SIDVocab, dict]:
    """Train with cross-entropy on the target SIDs; keep the epoch with the best validation NDCG@10.

    Returns:
        (model with the best epoch's weights, on CPU; its vocab; {"best_epoch", "epochs_run", "valid"}).
    """
    import random

    vocab = sid_vocab(sid_map["level_sizes"])
    encoder = SequenceEncoder(sid_map, vocab, args.max_history)
    examples = [encoder.train_example(row, paths[0]) for row in train]
    if args.max_valid_users and len(valid) > args.max_valid_users:
        valid = random.Random(args.seed).sample(valid, args.max_valid_users)
    device = resolve_device(args.device)
    model = build_model(vocab, args).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    logger.info("sid-scratch: %d parameters, %d train rows, %d valid rows, device %s",
                sum(p.numel() for p in model.parameters()), len(examples), len(valid), device)
    best = BestEpoch(model, f"ndcg@{SELECTION_K}", args.patience)
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(examples), generator=generator).tolist()
        total, count = 0.0, 0
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"sid-scratch epoch {epoch}", unit="batch", leave=False)
        for start in bar:
            batch = _right_pad([examples[i] for i in order[start : start + args.batch_size]])
            loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        scorer = ScratchScorer(model, sid_map, vocab, args.max_history, device=str(device))
        metrics = _valid_metrics(scorer, valid, args.num_beams) if valid else {}
        logger.info("epoch %d: train loss %.4f, valid %s", epoch, total / max(count, 1), metrics or "-")
        if best.update(model, epoch, metrics):
            break
    summary = best.restore(model, epoch)
    logger.info("sid-scratch: best epoch %d of %d, valid %s", summary["best_epoch"], epoch, summary["valid"] or "-")
    return model.cpu().eval(), vocab, summary


def load_scratch(folder: str | Path, device: str = "cpu") -> ScratchScorer:
    """A ScratchScorer from a <run>/scratch folder written by `align scratch`."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    for name in ("config.json", "scratch.json", "sid_map.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: rerun `align scratch` to write the model")
    info = read_json(folder / "scratch.json")
    model = LlamaForCausalLM.from_pretrained(folder)
    return ScratchScorer(model, read_json(folder / "sid_map.json"), SIDVocab.from_dict(info["vocab"]),
                         info["max_history"], device=device)


def run(args: ScratchArgs) -> Path:
    """Train the from-scratch SID model on the run's SIDs and splits; writes and returns <run_dir>/scratch."""
    run_dir = RunDir(args.run_dir)
    catalog, sid = run_dir.require("catalog"), run_dir.require("sid")
    paths = {"train": catalog / "train.jsonl", "valid": catalog / "valid.jsonl", "sid_map": sid / "sid_map.json"}
    train, valid = read_jsonl(paths["train"]), read_jsonl(paths["valid"])
    if not train:
        raise ValueError(f"{paths['train']} has no rows: the scratch model needs training sequences")
    sid_map = read_json(paths["sid_map"])
    model, vocab, summary = train_scratch(sid_map, train, valid, args, (paths["train"], paths["valid"]))
    with run_dir.building("scratch", config=args, inputs=list(paths.values())) as out:
        model.save_pretrained(out)
        write_json(out / "scratch.json", {"vocab": vocab.to_dict(), "max_history": args.max_history} | summary
                   | {"args": asdict(args)})
        write_json(out / "sid_map.json", sid_map)
    return run_dir.stage("scratch")


def main(argv: list[str] | None = None, prog: str = "align scratch") -> None:
    from align.config import parse_args

    (args,) = parse_args((ScratchArgs,), argv, prog=prog, doc=__doc__)
    run(args)
