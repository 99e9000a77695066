"""Push a trained checkpoint to the Hugging Face Hub: adapter, tokenizer, SID map, catalog titles and a model card.

The bundle is first assembled in <run>/push/ (a plain folder you can inspect or upload by other means), then sent
with `huggingface_hub`. When the Hub cannot be reached the command says so and leaves every local file in place.

    align push --run_dir runs/demo --repo_id you/align-demo
    align push --run_dir runs/demo --repo_id you/align-demo --model sft --private true

Load it back anywhere with `align recommend --model you/align-demo ...` (or align.models.load_checkpoint).
"""

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from align.run_dir import RunDir, read_json

logger = logging.getLogger(__name__)


@dataclass
class PushArgs:
    repo_id: str = field(metadata={"help": "Hub repository, 'user/name' or 'org/name'."})
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory holding the trained stages."})
    model: str = field(
        default="latest", metadata={"help": "'latest' (rl if finished, else sft), 'sft', 'rl' or a path."}
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the cached login or HF_TOKEN)."})
    commit_message: str = field(default="Upload align checkpoint", metadata={"help": "Commit message on the Hub."})


def _checkpoint(run: RunDir, model: str) -> Path:
    if model == "latest":
        return run.latest_model()
    if model in ("sft", "rl"):
        return run.require(model)
    path = Path(model)
    if not (path / "model_info.json").is_file():
        raise FileNotFoundError(f"{path} is not an align checkpoint (no model_info.json)")
    return path


def model_card(repo_id: str, info: dict, metrics: dict | None) -> str:
    """A short README.md: what the adapter is, how to load it, and the run's measured metrics."""
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {info['base_model']}",
        "tags: [align, recommendation, semantic-ids, lora]",
        "---",
        f"# {repo_id}",
        "",
        f"A LoRA adapter for `{info['base_model']}` that recommends catalog items by generating their Semantic IDs",
        "(trained with [align](https://pypi.org/project/align-rec/)). The folder also holds the extended tokenizer,",
        "`sid_map.json` (item id -> SID codes) and `items.jsonl` (item titles), so it decodes on its own.",
        "",
        "```bash",
        f"align recommend --model {repo_id} --history ITEM_ID,ITEM_ID",
        f"align chat --model {repo_id}",
        "```",
    ]
    if metrics:
        lines += ["", f"## Evaluation ({metrics.get('split', 'test')} split, {metrics.get('n_users', '?')} users)", ""]
        rows = [(f"model ({metrics.get('model_name', '')})", metrics["model"]), *metrics.get("baselines", {}).items()]
        keys = [k for k in metrics["model"] if k.startswith(("hr@", "ndcg@"))]
        lines += ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |" for name, m in rows]
    return "\n".join(lines) + "\n"


def bundle(run: RunDir, checkpoint: Path, repo_id: str) -> Path:
    """Copy the checkpoint and a model card into <run>/push/; returns that folder."""
    out = run.root / "push"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns("checkpoint-*", "manifest.json", "*.pt"))
    metrics_path = run.root / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else None
    (out / "README.md").write_text(model_card(repo_id, read_json(checkpoint / "model_info.json"), metrics))
    return out


def push(folder: Path, repo_id: str, *, private: bool, token: str | None, commit_message: str) -> str:
    """Upload a bundle folder; raises ConnectionError with a clear message when the Hub is unreachable."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    except HfHubHTTPError as err:
        raise ConnectionError(f"the Hub refused the upload to {repo_id}: {err}") from err
    except Exception as err:  # offline mode, DNS, proxies: all end here with the same advice
        raise ConnectionError(
            f"could not reach the Hugging Face Hub ({type(err).__name__}: {err}). Nothing was pushed; the bundle is "
            f"ready in {folder}: rerun `align push` when online, or upload that folder yourself"
        ) from err
    return str(getattr(info, "commit_url", info))


def run(args: PushArgs) -> str:
    run_dir = RunDir(args.run_dir)
    checkpoint = _checkpoint(run_dir, args.model)
    folder = bundle(run_dir, checkpoint, args.repo_id)
    logger.info("bundle for %s: %s (%s)", args.repo_id, folder, ", ".join(sorted(p.name for p in folder.iterdir())))
    url = push(folder, args.repo_id, private=args.private, token=args.token, commit_message=args.commit_message)
    logger.info("pushed: %s", url)
    return url


def main(argv: list[str] | None = None, prog: str = "align push") -> None:
    from align.config import parse_args

    (args,) = parse_args((PushArgs,), argv, prog=prog, doc=__doc__)
    run(args)
