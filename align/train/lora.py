"""LoRA on a model with SID tokens: the adapter config, and which embedding rows train.

Under LoRA the base embedding is frozen, yet the SID tokens are new and must learn. PEFT's
`trainable_token_indices` trains just those rows (stored inside the adapter, so checkpoints stay small):
- tied embeddings (SmolLM2, Qwen2.5 small): listing the input embedding is enough; PEFT ties the LM head's rows
  to the same trainable values.
- untied LM head: the LM head is listed too, with the same ids, so the output rows train and are saved as well;
  otherwise they would keep their initial values and be lost on reload.
The SID rows are always in the adapter; `train_sid_embeddings=false` only freezes them.
"""

from dataclasses import dataclass, field

from align.tokens import SIDVocab


@dataclass(kw_only=True)
class LoraArgs:
    """Model-loading and LoRA options shared by `align sft` and `align rl`."""

    model_dtype: str = field(
        default="auto",
        metadata={"help": "dtype of the base weights: auto (the checkpoint's), float32, bfloat16 or float16."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; higher = more capacity and memory."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (update scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={
            "help": "Modules that get LoRA: all-linear (every linear but the LM head) or names, e.g. q_proj,v_proj."
        },
    )
    train_sid_embeddings: bool = field(
        default=True, metadata={"help": "Train the SID tokens' embedding (and untied LM head) rows."}
    )

    def __post_init__(self) -> None:
        if self.model_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"model_dtype must be auto, float32, bfloat16 or float16, got {self.model_dtype!r}")


def sid_row_targets(model, vocab: SIDVocab) -> dict[str, list[int]]:
    """Module name -> SID token ids: the input embedding, plus the LM head when it is not tied to it."""
    ids = vocab.all_ids()
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(module): name for name, module in model.named_modules()}
    targets = {names[id(embeddings)]: ids}
    if head is not None and head.weight.data_ptr() != embeddings.weight.data_ptr():
        targets[names[id(head)]] = ids
    return targets


def lora_config(args: LoraArgs, model, vocab: SIDVocab):
    """A causal-LM LoraConfig whose adapter also carries the SID rows."""
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        trainable_token_indices=sid_row_targets(model, vocab),
    )


def add_lora(model, args: LoraArgs, vocab: SIDVocab):
    """Wrap `model` in a fresh LoRA adapter (PeftModel) that carries the SID rows."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(args, model, vocab))
    prepare_sid_rows(peft_model, args.train_sid_embeddings)
    return peft_model


def prepare_sid_rows(peft_model, trainable: bool) -> None:
    """Freeze or unfreeze the SID rows held by the adapter, and let TRL's fused LM head read the wrapped head.

    TRL's trainers compute log-probs from `lm_head.weight` and `lm_head.bias` directly. PEFT's
    TrainableTokensWrapper answers `.weight` (the base rows with the trained SID rows swapped in, differentiable)
    but raises on `.bias`, so the wrapper gets the base layer's bias (None for LLM heads) as a plain attribute.
    """
    from peft.utils.other import TrainableTokensWrapper

    for name, param in peft_model.named_parameters():
        if "trainable_tokens_delta" in name and ".default" in name:
            param.requires_grad_(trainable)
    head = peft_model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in vars(head):
        vars(head)["bias"] = head.original_module.bias  # not registered: the base layer still owns it


def continue_from(source, sid_map: dict, sid_dir, args: LoraArgs):
    """An align checkpoint (folder or Hub id) with its adapter trainable again: (PeftModel, tokenizer, vocab, base
    model name). Its SIDs must be the run's: the SID token rows mean nothing under another map."""
    from align.models import load_checkpoint

    model, tokenizer, vocab, start_map = load_checkpoint(source, merge=False, trainable=True, dtype=args.model_dtype)
    if start_map["items"] != sid_map["items"]:
        raise ValueError(
            f"checkpoint {source} was trained on other SIDs than {sid_dir}: start from a checkpoint of this run "
            "or rebuild the run's later stages"
        )
    prepare_sid_rows(model, args.train_sid_embeddings)
    return model, tokenizer, vocab, model.peft_config["default"].base_model_name_or_path
