"""SASRec: the neural sequential baseline a generative recommender has to beat, and the scorer of the `cf` reward.

Trains a small SASRec (Kang & McAuley, 2018) on <run>/catalog/train.jsonl (history -> target rows), keeps the epoch
with the best NDCG@10 on valid.jsonl (early stopping) and writes <run>/sasrec/: model.pt (state_dict), config.json
(sizes, best epoch, valid metrics), items.json (the item index) and manifest.json. `align eval` then reports it
beside the counting baselines, and the GRPO reward `cf` scores completions with it.

The model: item embeddings (tied with the output layer) plus learned positions, causal pre-norm Transformer layers,
and the last position's state scored against every catalog item with a full softmax cross-entropy (which beats the
original paper's sampled BCE by a wide margin on these data). For the test split the validation rows serve only to
pick the epoch; the test rows' histories do contain the validation target, so the scorer sees it as history.

    align baseline recipes/cpu_demo/baseline.yaml
    align baseline --run_dir runs/x --epochs 200 --patience 10
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from align.best_epoch import BestEpoch, resolve_device
from align.run_dir import RunDir, read_json, read_jsonl, write_json

logger = logging.getLogger(__name__)

PAD = 0  # item index 0 is padding; catalog item i (items.json order) has index i + 1
SELECTION_K = 10  # the epoch is picked by NDCG@10 on the validation rows


@dataclass
class SASRecArgs:
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory: reads catalog/, writes sasrec/."})
    hidden: int = field(default=64, metadata={"help": "Width of item embeddings and Transformer layers."})
    layers: int = field(default=2, metadata={"help": "Causal self-attention layers."})
    heads: int = field(default=2, metadata={"help": "Attention heads per layer (must divide hidden)."})
    max_len: int = field(default=10, metadata={"help": "History window: the model reads the latest max_len items."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout on embeddings, attention and feed-forward."})
    epochs: int = field(
        default=200, metadata={"help": "Most epochs over the train rows (early stopping may end sooner)."}
    )
    patience: int = field(
        default=10, metadata={"help": "Stop after this many epochs without a better validation NDCG@10 (0 = never)."}
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=256, metadata={"help": "Train rows per step."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, shuffling and dropout."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "max_len", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"--heads ({self.heads}) must divide --hidden ({self.hidden})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class SASRecConfig:
    """What it takes to rebuild the network from config.json."""

    n_items: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 10
    dropout: float = 0.2


class SASRec(nn.Module):
    """Self-attentive next-item model over left-padded windows of item indices."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, max_len) item indices, left-padded with 0 -> (B, n_items) next-item logits (catalog order)."""
        length = seqs.shape[1]
        x = self.dropout(self.item_emb(seqs) + self.pos_emb.weight[-length:])
        # Blocked: future positions and padding. Each position may always see itself, so no row is fully blocked
        # (an all-padding window, i.e. an empty history, then yields a history-free "popularity" prediction).
        itself = torch.eye(length, dtype=torch.bool, device=seqs.device)
        future = torch.ones_like(itself).triu(1)
        blocked = (future | (seqs == PAD)[:, None, :]) & ~itself  # (B, L, L)
        mask = torch.zeros(blocked.shape, device=seqs.device).masked_fill(blocked, float("-inf"))
        states = self.encoder(x, mask=mask.repeat_interleave(self.config.heads, dim=0))  # (B, L, H)
        return self.norm(states[:, -1]) @ self.item_emb.weight[1:].T


def encode_histories(
    histories: Sequence[Sequence[str]], index: dict[str, int], max_len: int
) -> tuple[torch.Tensor, int]:
    """Histories -> ((B, max_len) int64 left-padded windows of their latest known items, unknown items dropped)."""
    seqs = torch.zeros(len(histories), max_len, dtype=torch.int64)
    unknown = 0
    for row, history in enumerate(histories):
        known = [index[item] for item in history if item in index]
        unknown += len(history) - len(known)
        known = known[-max_len:]
        if known:
            seqs[row, max_len - len(known) :] = torch.tensor(known)
    return seqs, unknown


def encode_rows(
    rows: list[dict], index: dict[str, int], max_len: int, path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Catalog rows -> (R, max_len) windows and (R,) 0-based target positions; every item must be in the catalog."""
    for row in rows:
        for item in (*row["history"], row["target"]):
            if item not in index:
                raise ValueError(
                    f"{path}: user {row.get('user_id')!r} has item {item!r}, which is not in items.jsonl: "
                    "rerun `align prepare` so the splits and the catalog agree"
                )
    seqs, _ = encode_histories([row["history"] for row in rows], index, max_len)
    return seqs, torch.tensor([index[row["target"]] - 1 for row in rows], dtype=torch.int64)


@torch.no_grad()
def target_ranks(model: SASRec, seqs: torch.Tensor, targets: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(R,) 0-based rank of each target among all catalog items (items scored strictly higher)."""
    model.eval()
    device = next(model.parameters()).device
    ranks = []
    for start in range(0, len(seqs), batch_size):
        logits = model(seqs[start : start + batch_size].to(device))
        target = targets[start : start + batch_size].to(device)
        ranks.append((logits > logits.gather(1, target[:, None])).sum(1).cpu())
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.int64)


def rank_metrics(ranks: torch.Tensor, k: int = SELECTION_K) -> dict[str, float]:
    """HR@k and NDCG@k from 0-based target ranks (one relevant item per row)."""
    hit = ranks < k
    gains = torch.where(hit, 1.0 / torch.log2(ranks.float() + 2.0), torch.zeros(()))
    return {f"hr@{k}": round(hit.float().mean().item(), 4), f"ndcg@{k}": round(gains.mean().item(), 4)}


def train_sasrec(
    item_ids: list[str], train: list[dict], valid: list[dict], args: SASRecArgs, paths: tuple[Path, Path]
) -> tuple[SASRec, dict]:
    """Train with full-softmax cross-entropy and keep the best epoch on `valid` (the last one when valid is empty).

    Returns:
        The model with the best epoch's weights (on CPU) and {"best_epoch", "epochs_run", "valid": metrics}.
    """
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    seqs, targets = encode_rows(train, index, args.max_len, paths[0])
    valid_seqs, valid_targets = encode_rows(valid, index, args.max_len, paths[1])
    config = SASRecConfig(len(item_ids), args.hidden, args.layers, args.heads, args.max_len, args.dropout)
    model = SASRec(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    best = BestEpoch(model, f"ndcg@{SELECTION_K}", args.patience)
    logger.info(
        "SASRec: %d items, %d train rows, %d valid rows, device %s", len(item_ids), len(seqs), len(valid_seqs), device
    )
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(seqs), generator=generator)
        total = 0.0
        bar = tqdm(range(0, len(seqs), args.batch_size), desc=f"sasrec epoch {epoch}", unit="batch", leave=False)
        for start in bar:
            batch = order[start : start + args.batch_size]
            loss = nn.functional.cross_entropy(model(seqs[batch].to(device)), targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        metrics = rank_metrics(target_ranks(model, valid_seqs, valid_targets)) if len(valid_seqs) else {}
        logger.info("epoch %d: train loss %.4f, valid %s", epoch, total / max(len(seqs), 1), metrics or "-")
        if best.update(model, epoch, metrics):
            break
    summary = best.restore(model, epoch)
    logger.info("SASRec: best epoch %d of %d, valid %s", summary["best_epoch"], epoch, summary["valid"] or "-")
    return model.cpu().eval(), summary


class SASRecScorer:
    """A trained SASRec over a fixed catalog: top-k items and item probabilities for item-id histories.

    History items missing from the catalog are dropped (and counted in a warning); histories longer than the
    window keep their latest items.
    """

    def __init__(self, model: SASRec, item_ids: list[str], device: str = "cpu", batch_size: int = 1024) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.item_ids = list(item_ids)
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.batch_size = batch_size

    @torch.no_grad()
    def logits(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """(B, N) next-item logits over the catalog (items.json order), on CPU."""
        seqs, unknown = encode_histories(histories, self.index, self.model.config.max_len)
        if unknown:
            logger.warning("SASRec: dropped %d history items that are not in its catalog", unknown)
        out = [
            self.model(seqs[s : s + self.batch_size].to(self.device)).float().cpu()
            for s in range(0, len(seqs), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, len(self.item_ids))

    def rank(self, histories: Sequence[Sequence[str]], k: int) -> list[list[str]]:
        """The top-k catalog item ids for each history, best first."""
        top = self.logits(histories).topk(min(k, len(self.item_ids)), dim=1).indices.tolist()
        return [[self.item_ids[i] for i in row] for row in top]

    def score(self, histories: Sequence[Sequence[str]], candidate_items: Sequence[str | None]) -> torch.Tensor:
        """(B,) softmax probability over the catalog of candidate_items[b] following histories[b].

        A candidate that is None or not in the catalog scores 0.0. Repeated histories (the G completions of one
        prompt) are encoded once.
        """
        if len(histories) != len(candidate_items):
            raise ValueError(f"got {len(histories)} histories for {len(candidate_items)} candidate items")
        if not histories:
            return torch.zeros(0)
        row_of: dict[tuple, int] = {}
        rows = torch.tensor([row_of.setdefault(tuple(h), len(row_of)) for h in histories], dtype=torch.int64)
        probs = self.logits(list(row_of)).softmax(dim=1)  # (U, N), U distinct histories
        known = torch.tensor([item in self.index for item in candidate_items], dtype=torch.bool)
        columns = torch.tensor([self.index.get(item, 1) - 1 for item in candidate_items], dtype=torch.int64)
        return torch.where(known, probs[rows, columns], torch.zeros(()))


def load_sasrec(folder: str | Path, device: str = "cpu") -> SASRecScorer:
    """A SASRecScorer from a <run>/sasrec folder written by `align baseline`."""
    folder = Path(folder)
    for name in ("config.json", "items.json", "model.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: rerun `align baseline` to write a SASRec model")
    saved = read_json(folder / "config.json")
    config = SASRecConfig(**{key: saved[key] for key in asdict(SASRecConfig(n_items=0))})
    model = SASRec(config)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return SASRecScorer(model, read_json(folder / "items.json"), device=device)


def run(args: SASRecArgs) -> Path:
    """Train SASRec on the run's catalog splits and write <run_dir>/sasrec; returns that folder."""
    run_dir = RunDir(args.run_dir)
    catalog = run_dir.require("catalog")
    paths = {name: catalog / f"{name}.jsonl" for name in ("items", "train", "valid")}
    item_ids = [row["item_id"] for row in read_jsonl(paths["items"])]
    train, valid = read_jsonl(paths["train"]), read_jsonl(paths["valid"])
    if not train:
        raise ValueError(f"{paths['train']} has no rows: SASRec needs training sequences (users with 3+ items)")
    if not valid:
        logger.warning("%s is empty: no early stopping, the model of the last epoch is kept", paths["valid"])
    model, summary = train_sasrec(item_ids, train, valid, args, (paths["train"], paths["valid"]))
    with run_dir.building("sasrec", config=args, inputs=list(paths.values())) as out:
        torch.save(model.state_dict(), out / "model.pt")
        write_json(out / "config.json", asdict(model.config) | summary)
        write_json(out / "items.json", item_ids)
    return run_dir.stage("sasrec")


def main(argv: list[str] | None = None, prog: str = "align baseline") -> None:
    from align.config import parse_args

    (args,) = parse_args((SASRecArgs,), argv, prog=prog, doc=__doc__)
    run(args)
