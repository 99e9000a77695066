"""Embed item texts and quantize them into unique Semantic IDs: residual k-means (plain, balanced, per prefix)
or an RQ-VAE, optionally on text fused with behaviour vectors from the training interactions.

Reads <run_dir>/catalog/items.jsonl (its "text" field; train.jsonl too with --behaviour_weight), writes
<run_dir>/sid: sid_map.json (item id -> codes, all distinct), embeddings.npy (the quantized vectors, rows in
items.jsonl order), report.json (codebook use, collisions before resolution, reconstruction error, semantic
coherence) and report.png (the same, drawn).

    align sids recipes/cpu_demo/sids.yaml
    align sids --run_dir runs/industrial --method rq-kmeans-balanced --codebook_size 256 --collision reassign
    align sids --run_dir runs/industrial --method rq-vae --vae_sinkhorn true --behaviour_weight 0.3
    align sids --run_dir runs/industrial --import_sids runs/industrial/catalog/imported_sids.json

`--embeddings_npy FILE.npy` uses precomputed (N, D) embeddings instead of the encoder; `--import_sids FILE.json`
({item_id: [codes] or ["<a_1>", "<b_2>", ...]}, or a sid_map-like {"items": {...}}) uses given SIDs instead of
quantizing: they are still made unique and reported.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from align.config import parse_args
from align.run_dir import RunDir, read_json, read_jsonl, write_json
from align.sid.collisions import COLLISION_METHODS, check_code_space, make_unique
from align.sid.embed import DEFAULT_ENCODER, Encoder, encode_texts
from align.sid.fusion import fuse_behaviour
from align.sid.plot import write_report_png
from align.sid.report import sid_report
from align.sid.rqkmeans import RQResult, fit_rq_kmeans
from align.sid.rqvae import fit_rq_vae
from align.tokens import LEVEL_LETTERS, parse_sid

logger = logging.getLogger(__name__)

# name -> fit(x (N, D), *, levels, codebook_size, iters, seed, device, ...) -> RQResult; method_options() gives
# the rest. A new quantizer is one more entry returning an RQResult (codes, codebooks, level errors).
METHODS: dict[str, Callable[..., RQResult]] = {
    "rq-kmeans": partial(fit_rq_kmeans, balanced=False),
    "rq-kmeans-balanced": partial(fit_rq_kmeans, balanced=True),
    "rq-kmeans-prefix-balanced": partial(fit_rq_kmeans, balanced=True, balance_per_prefix=True),
    "rq-vae": fit_rq_vae,
}


@dataclass
class SIDArgs:
    run_dir: str = field(metadata={"help": "Run directory: reads catalog/items.jsonl, writes sid/."})
    encoder: str = field(
        default=DEFAULT_ENCODER,
        metadata={"help": "sentence-transformers model (Hub id or local folder) that embeds each item's text."},
    )
    embeddings_npy: str | None = field(
        default=None,
        metadata={
            "help": "Precomputed (N, D) embeddings, rows in items.jsonl order, used as given instead of --encoder."
        },
    )
    method: str = field(
        default="rq-kmeans-prefix-balanced",
        metadata={
            "help": f"Quantizer: {', '.join(METHODS)}. Balanced caps each code at ceil(N / K) items, so codes are "
            "used evenly; prefix-balanced applies that cap within each group of items sharing their earlier codes, "
            "so siblings get different codes and SIDs rarely collide; rq-vae trains an MLP autoencoder with "
            "residual codebooks (TIGER), see the --vae_* options."
        },
    )
    levels: int = field(default=3, metadata={"help": "Code levels before the collision level."})
    codebook_size: int = field(
        default=0,
        metadata={
            "help": "Codes per level; 0 = automatic: clamp(round(1.5 * N ** (1 / levels)), 4, 256), enough "
            "for every item but several items per code."
        },
    )
    balance_tolerance: float = field(
        default=0.0,
        metadata={
            "help": "Balanced methods: a code may hold up to ceil((1 + t) * N / K) items (per prefix: of the "
            "prefix's items). 0 = the strict cap; a few percent lets codes follow natural clusters of unequal "
            "size, for a lower reconstruction error."
        },
    )
    collision: str = field(
        default="extra-level",
        metadata={
            "help": f"How items with equal codes get distinct SIDs: {', '.join(COLLISION_METHODS)}. extra-level "
            "adds one level ranking the items that share their codes (only when some do); reassign keeps the "
            "length and moves colliding items to the nearest last-level code free within their prefix."
        },
    )
    iters: int = field(default=20, metadata={"help": "k-means iterations per level (on a sample for large catalogs)."})
    refine_sweeps: int = field(
        default=1,
        metadata={
            "help": "Sweeps re-fitting each level against the others after the greedy fit; lowers the final "
            "reconstruction error, one pass over the items per level each."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the quantizer: the same seed gives the same SIDs."})
    behaviour_weight: float = field(
        default=0.0,
        metadata={
            "help": "Share w in [0, 1] of behaviour in the quantized vectors: [sqrt(1-w) text, sqrt(w) behaviour], "
            "behaviour = truncated SVD of item co-occurrence in catalog/train.jsonl; 0 = text only."
        },
    )
    behaviour_dim: int = field(default=32, metadata={"help": "Dimensions of the behaviour vectors."})
    vae_epochs: int = field(default=200, metadata={"help": "rq-vae: training epochs."})
    vae_lr: float = field(default=1e-3, metadata={"help": "rq-vae: Adam learning rate."})
    vae_batch_size: int = field(default=256, metadata={"help": "rq-vae: items per training batch."})
    vae_latent_dim: int = field(default=32, metadata={"help": "rq-vae: width of the quantized latent."})
    vae_hidden_dim: int = field(default=256, metadata={"help": "rq-vae: width of the encoder/decoder hidden layer."})
    vae_sinkhorn: bool = field(
        default=False,
        metadata={
            "help": "rq-vae: assign the last level by Sinkhorn-Knopp (near-uniform, as LC-Rec): fewer collisions."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Texts per encoder batch."})
    device: str | None = field(
        default=None, metadata={"help": "Device for encoding and quantizing (cpu, cuda); default: cuda if available."}
    )
    import_sids: str | None = field(
        default=None,
        metadata={
            "help": 'Use these SIDs instead of quantizing: JSON {item_id: codes or ["<a_1>", ...]}, e.g. '
            "<run>/catalog/imported_sids.json."
        },
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r} is unknown; choose one of {', '.join(METHODS)}")
        if self.collision not in COLLISION_METHODS:
            raise ValueError(
                f"--collision {self.collision!r} is unknown; choose one of {', '.join(COLLISION_METHODS)}"
            )
        if not 1 <= self.levels < len(LEVEL_LETTERS):
            raise ValueError(
                f"--levels must be in 1..{len(LEVEL_LETTERS) - 1} (one letter per level), got {self.levels}"
            )
        for name in ("codebook_size", "iters", "refine_sweeps", "vae_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "behaviour_dim", "vae_batch_size", "vae_latent_dim", "vae_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.balance_tolerance < 0:
            raise ValueError(f"--balance_tolerance must be >= 0, got {self.balance_tolerance}")
        if not 0.0 <= self.behaviour_weight <= 1.0:
            raise ValueError(f"--behaviour_weight must be in [0, 1], got {self.behaviour_weight}")


def run(args: SIDArgs, encoder: Encoder | None = None) -> Path:
    """Build <run_dir>/sid and return its path; `encoder` (texts -> array) replaces loading --encoder."""
    rundir = RunDir(args.run_dir)
    items_path = rundir.require("catalog") / "items.jsonl"
    item_ids, texts = load_items(items_path)
    inputs = [items_path]
    if args.embeddings_npy:
        embeddings = load_embeddings(Path(args.embeddings_npy), item_ids)
        inputs.append(Path(args.embeddings_npy))
    else:
        embeddings = encode_texts(texts, args.encoder, args.batch_size, args.device, encoder)
    if args.behaviour_weight and not args.import_sids:
        train_path = rundir.stage("catalog") / "train.jsonl"
        embeddings = fuse_behaviour(embeddings, train_path, item_ids, args.behaviour_weight, args.behaviour_dim)
        inputs.append(train_path)

    result, distances_of = None, None
    if args.import_sids:
        codes, level_sizes = read_imported_sids(Path(args.import_sids), item_ids)
        inputs.append(Path(args.import_sids))
        check_code_space(len(item_ids), level_sizes, args.collision)
    else:
        codebook_size = args.codebook_size or auto_codebook_size(len(item_ids), args.levels)
        check_code_space(len(item_ids), [min(codebook_size, len(item_ids))] * args.levels, args.collision)
        x = torch.from_numpy(embeddings)
        result = METHODS[args.method](x, codebook_size=codebook_size, **method_options(args))
        codes, level_sizes = result.codes, result.level_sizes

        def distances_of(rows: torch.Tensor) -> torch.Tensor:
            return result.last_level_distances(x[rows], codes[rows])

    report = sid_report(codes, level_sizes, embeddings, level_errors=result.level_errors if result else None)
    unique = make_unique(codes, args.collision, level_sizes, distances_of)
    final_sizes = [*level_sizes, *(unique[:, len(level_sizes) :].max(0).values + 1).tolist()]
    report["method"] = "imported" if args.import_sids else args.method
    report["sid"] = {"levels": len(final_sizes), "level_sizes": final_sizes, "collision": args.collision}
    report["after_resolution"] = {
        "levels": sid_report(unique, final_sizes)["levels"],
        "moved_items": int((unique[:, : codes.shape[1]] != codes).any(1).sum()),
    }
    if args.behaviour_weight and not args.import_sids:
        report["behaviour"] = {"weight": args.behaviour_weight, "dim": args.behaviour_dim}
    with rundir.building("sid", config=args, inputs=inputs) as out:
        sid_map = {
            "levels": len(final_sizes),
            "level_sizes": final_sizes,
            "items": dict(zip(item_ids, unique.tolist(), strict=True)),
        }
        write_json(out / "sid_map.json", sid_map)
        np.save(out / "embeddings.npy", embeddings)
        write_json(out / "report.json", report)
        write_report_png(report, out / "report.png")
    logger.info("%s: %s", rundir.stage("sid"), summary(report))
    return rundir.stage("sid")


def method_options(args: SIDArgs) -> dict:
    """Keyword arguments of METHODS[args.method] besides x and codebook_size."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = {"levels": args.levels, "iters": args.iters, "seed": args.seed, "device": device}
    if args.method == "rq-vae":
        return options | {
            "epochs": args.vae_epochs,
            "lr": args.vae_lr,
            "batch_size": args.vae_batch_size,
            "latent_dim": args.vae_latent_dim,
            "hidden_dim": args.vae_hidden_dim,
            "sinkhorn": args.vae_sinkhorn,
        }
    return options | {"refine_sweeps": args.refine_sweeps, "balance_tolerance": args.balance_tolerance}


def auto_codebook_size(n_items: int, levels: int) -> int:
    """K with K**levels comfortably above n_items while each first-level code still holds several items."""
    return max(4, min(256, round(1.5 * n_items ** (1 / levels))))


def load_items(path: Path) -> tuple[list[str], list[str]]:
    """Item ids and texts of items.jsonl, in file order."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} has no items: run `align prepare` on a non-empty catalog")
    item_ids, texts, seen = [], [], set()
    for line, row in enumerate(rows, 1):
        item_id, text = row.get("item_id"), row.get("text")
        if item_id is None:
            raise ValueError(f"{path}: line {line} has no item_id: re-run `align prepare`")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: item {item_id} has no text to embed: give it a title or description")
        if item_id in seen:
            raise ValueError(f"{path}: item {item_id} appears twice: item ids must be unique")
        seen.add(item_id)
        item_ids.append(str(item_id))
        texts.append(text)
    return item_ids, texts


def load_embeddings(path: Path, item_ids: list[str]) -> np.ndarray:
    """(N, D) float32 from a .npy file whose rows follow items.jsonl."""
    if not path.is_file():
        raise FileNotFoundError(f"--embeddings_npy {path} does not exist")
    embeddings = np.load(path)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(item_ids):
        raise ValueError(
            f"{path} has shape {embeddings.shape}, expected ({len(item_ids)}, dim): one row per item of "
            "items.jsonl, in the same order"
        )
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{path}: row {row} (item {item_ids[row]}) has NaN or inf values: recompute it")
    return embeddings.astype(np.float32)


def read_imported_sids(path: Path, item_ids: list[str]) -> tuple[torch.Tensor, list[int]]:
    """(N, L) codes in catalog order and level sizes from a SID file; every catalog item needs a SID."""
    if not path.is_file():
        raise FileNotFoundError(f"--import_sids {path} does not exist")
    data = read_json(path)
    table, given_sizes = data, []
    if isinstance(data, dict) and isinstance(data.get("items"), dict):  # sid_map.json / imported_sids.json layout
        table, given_sizes = data["items"], data.get("level_sizes") or []
    if not isinstance(table, dict):
        raise ValueError(f'{path}: expected a JSON object {{item_id: ["<a_1>", "<b_2>", ...]}}')
    missing = [item for item in item_ids if item not in table]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} of {len(item_ids)} catalog items have no SID (first: item {missing[0]}); "
            "give every item a SID, or quantize instead (drop --import_sids)"
        )
    extra = len(set(table) - set(item_ids))
    if extra:
        logger.info("%s: %d SIDs name items outside the catalog; ignored", path, extra)
    rows = [_parse_codes(table[item], item, path) for item in item_ids]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"{path}: SIDs have different lengths {sorted(lengths)}: every SID needs the same levels")
    codes = torch.tensor(rows, dtype=torch.int64)
    if codes.shape[1] >= len(LEVEL_LETTERS):
        raise ValueError(f"{path}: SIDs of {codes.shape[1]} levels leave no letter for the collision level")
    level_sizes = (codes.max(0).values + 1).tolist()
    if len(given_sizes) == len(level_sizes):
        level_sizes = [max(int(given), found) for given, found in zip(given_sizes, level_sizes, strict=True)]
    return codes, level_sizes


def _parse_codes(sid, item: str, path: Path) -> tuple[int, ...]:
    """[12, 3, 7], ["<a_12>", "<b_3>", "<c_7>"] or "<a_12><b_3><c_7>" -> (12, 3, 7)."""
    if isinstance(sid, list) and sid and all(isinstance(c, int) and c >= 0 for c in sid):
        return tuple(sid)
    codes = parse_sid("".join(sid) if isinstance(sid, list) and all(isinstance(c, str) for c in sid) else str(sid))
    if codes is None:
        raise ValueError(
            f'{path}: item {item} has SID {sid!r}, which is neither codes [12, 3, 7] nor "<a_12><b_3>..."'
        )
    return codes


def summary(report: dict) -> str:
    """One line: SID shape, first-level use, collisions, reconstruction and coherence."""
    first, collisions = report["levels"][0], report["collisions"]
    parts = [
        f"{report['items']} items, {report['method']} -> SIDs of {report['sid']['level_sizes']} codes per level",
        f"level 1 uses {first['used']}/{first['size']} codes (perplexity {first['perplexity']:.1f})",
        f"{collisions['collision_rate']:.1%} of items collided before {report['sid']['collision']} "
        f"(largest group {collisions['largest_group']})",
    ]
    if "reconstruction_mse" in report:
        parts.append(f"reconstruction mse {report['reconstruction_mse']:.4f}")
    coherence = report.get("coherence", {})
    if coherence.get("same_first_code") is not None:
        parts.append(
            f"cosine same first code {coherence['same_first_code']:.3f} vs {coherence['random_pairs']:.3f} random"
        )
    return "; ".join(parts)


def main(argv: list[str] | None = None, prog: str = "align sids") -> None:
    (args,) = parse_args((SIDArgs,), argv, prog=prog, doc=__doc__)
    run(args)
