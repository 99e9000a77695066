"""Recommend catalog items for a history: constrained top-K, answered with real items (title and SID).

    align recommend --run_dir runs/demo --history item_12,item_40
    align recommend --model you/align-demo --history_titles "Northwind Espresso Beans; Milk Frother"

The model is a checkpoint folder or hub id (default: the newest trained stage of --run_dir). A checkpoint carries
its tokenizer, SID map, item titles and the prompt it was trained with, so the answer uses the training prompt.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from align.run_dir import RunDir, read_json, read_jsonl

logger = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")


@dataclass
class RecommendArgs:
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory whose newest model is used."})
    model: str = field(default="", metadata={"help": "Checkpoint folder or hub id (overrides --run_dir)."})
    history: str = field(default="", metadata={"help": "Comma-separated item ids, oldest first."})
    history_titles: str = field(
        default="", metadata={"help": "Semicolon-separated titles (matched to catalog items), oldest first."}
    )
    k: int = field(default=10, metadata={"help": "How many items to return."})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained search (at least k)."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'."})


class Recommender:
    """A loaded checkpoint plus what it needs to turn a history into a top-K list of catalog items."""

    def __init__(self, checkpoint: str, device: str = "auto") -> None:
        import torch

        from align.decode.trie import SIDTrie
        from align.models import checkpoint_folder, load_checkpoint
        from align.tokens import format_sid, sid_table

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        folder = checkpoint_folder(checkpoint)
        self.model, self.tokenizer, self.vocab, sid_map = load_checkpoint(str(folder), device=self.device)
        self.item_ids, codes = sid_table(sid_map)
        self.trie = SIDTrie.from_codes(codes, sid_map["level_sizes"]).to(self.device)
        self.sids = {item: format_sid(sid_map["items"][item]) for item in self.item_ids}
        self.items = {row["item_id"]: row for row in read_jsonl(_checkpoint_file(folder, "items.jsonl"))}
        self.prompting = read_json(_checkpoint_file(folder, "prompting.json"))

    def _messages(self, user_text: str) -> list[dict]:
        from align.data.templates import chat_messages

        return chat_messages(user_text, self.prompting["system_prompt"])

    def history_prompt(self, history: list[str]) -> list[dict]:
        """The canonical next-item prompt (as in training) for a history of item ids."""
        from align.data.fields import history_fields

        unknown = [item for item in history if item not in self.sids]
        if unknown:
            raise ValueError(f"unknown item id(s) {', '.join(unknown[:5])}: not in this model's catalog")
        if not history:
            raise ValueError("the history is empty: give at least one item")
        fields = history_fields(history, self.items, self.sids, self.prompting["max_history"])
        return self._messages(self.prompting["prompts"]["seqrec"].format(**fields))

    def text_prompt(self, text: str) -> list[dict]:
        """A next-item prompt for a history given only in words (the titles2sid task's form)."""
        template = self.prompting["prompts"].get("titles2sid")
        if template is None:
            raise ValueError("this model was not trained on histories in words (task titles2sid): name catalog items")
        return self._messages(template.format(history_titles=text, n_history=1))

    def top_k(self, prompts: list[list[dict]], k: int = 10, num_beams: int = 20) -> list[list[dict]]:
        """Top-k catalog items for each prompt, best first: item_id, title, sid, score (log-probability)."""
        import torch

        from align.decode.beam import topk_items

        with torch.no_grad():
            beams = topk_items(self.model, self.tokenizer, prompts, self.trie, self.vocab, k=k,
                               num_beams=max(num_beams, k), progress=False)
        out = []
        for items, scores in zip(beams.items.tolist(), beams.scores.tolist(), strict=True):
            out.append([
                {"item_id": self.item_ids[i], "title": self.items.get(self.item_ids[i], {}).get("title", ""),
                 "sid": self.sids[self.item_ids[i]], "score": round(score, 3)}
                for i, score in zip(items, scores, strict=True) if i >= 0
            ])
        return out

    def match_titles(self, text: str, max_items: int = 10) -> list[str]:
        """Catalog items named in free text, in the order they are mentioned.

        A title matches when most of its words occur in the text; among titles that share words (sizes, colours of
        one line) each new match must add a word the earlier ones did not cover, so "the blue one" does not also
        pick the red sibling.
        """
        words = _WORD.findall(text.lower())
        text_words = set(words)
        scored = []
        for item_id, row in self.items.items():
            title_words = set(_WORD.findall(row.get("title", "").lower()))
            if not title_words:
                continue
            hit = title_words & text_words
            coverage = len(hit) / len(title_words)
            if coverage >= 0.6 and len(hit) >= min(2, len(title_words)):
                scored.append((coverage, len(hit), item_id, hit))
        scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
        chosen: dict[str, set[str]] = {}
        covered: set[str] = set()
        for _, _, item_id, hit in scored:
            if hit - covered and len(chosen) < max_items:
                chosen[item_id] = hit
                covered |= hit

        def first_mention(item: str) -> int:
            # Siblings share most words: place each item by the first word only it has, if any.
            others = set().union(*(hit for other, hit in chosen.items() if other != item))
            own = chosen[item] - others or chosen[item]
            return min(words.index(word) for word in own)

        return sorted(chosen, key=first_mention)


def _checkpoint_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this checkpoint was not written by `align sft` / `align rl`")
    return path


def resolve_model(run_dir: str, model: str) -> str:
    return model or str(RunDir(run_dir).latest_model())


def format_answer(recs: list[dict]) -> str:
    return "\n".join(f"{i}. {r['title']}  {r['sid']}  (item {r['item_id']}, score {r['score']})"
                     for i, r in enumerate(recs, 1))


def run(args: RecommendArgs) -> list[dict]:
    rec = Recommender(resolve_model(args.run_dir, args.model), device=args.device)
    if args.history:
        history = [item.strip() for item in args.history.split(",") if item.strip()]
    elif args.history_titles:
        history = rec.match_titles(args.history_titles.replace(";", " ; "))
        if not history:
            raise ValueError(f"no catalog item matches the titles {args.history_titles!r}")
    else:
        raise ValueError("give --history (item ids) or --history_titles")
    return rec.top_k([rec.history_prompt(history)], k=args.k, num_beams=args.num_beams)[0]


def main(argv: list[str] | None = None, prog: str = "align recommend") -> None:
    from align.config import parse_args

    (args,) = parse_args((RecommendArgs,), argv, prog=prog, doc=__doc__)
    print(format_answer(run(args)))
