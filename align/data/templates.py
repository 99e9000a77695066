"""Task templates: prompt paraphrases and a response, kept as data in data_templates/*.yaml.

A template file names its task, its source (which `{field}`s exist: align/data/fields.py), the splits it feeds
(sft, grpo, eval) and a few paraphrases. Adding a task is adding a file. The FIRST paraphrase is canonical:
grpo and eval prompts always use it, so results never depend on which paraphrase a seed happened to pick.
"""

import random
import string
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align.data.fields import SOURCE_FIELDS

SPLITS = ("sft", "grpo", "eval")
KEYS = ("task", "source", "splits", "prompts", "response")
# grpo and eval rows are scored by comparing the answer with the target SID, so their response must be that SID.
SID_RESPONSE = "{target_sid}"


def _find_default_dir() -> Path:
    """data_templates/ beside the `align` package (source checkout, editable install), else a wheel's copy."""
    candidates = (
        Path(__file__).resolve().parents[2] / "data_templates",
        Path(sys.prefix) / "share" / "align-rec" / "data_templates",
    )
    return next((path for path in candidates if path.is_dir()), candidates[0])


DEFAULT_TEMPLATES_DIR = _find_default_dir()


@dataclass(frozen=True)
class Template:
    """One task: its paraphrases, its response and where its examples go."""

    task: str
    source: str
    splits: tuple[str, ...]
    prompts: tuple[str, ...]
    response: str
    path: Path

    def fields_used(self, paraphrase: int) -> frozenset[str]:
        """The fields that paraphrase number `paraphrase` (0-based) and the response refer to."""
        return _placeholders(self.prompts[paraphrase]) | _placeholders(self.response)


def render(template: Template, fields: Mapping[str, Any], choice: random.Random | int) -> tuple[str, str]:
    """Fill one paraphrase and the response with `fields`.

    Args:
        template: the task.
        fields: a value for every field of the template's source (align.data.fields).
        choice: a paraphrase index (0 = canonical), or a random.Random to draw one.

    Returns:
        (prompt_text, response_text).
    """
    index = choice.randrange(len(template.prompts)) if isinstance(choice, random.Random) else choice
    return template.prompts[index].format(**fields), template.response.format(**fields)


def chat_messages(user_text: str, system_prompt: str = "") -> list[dict[str, str]]:
    """A prompt in TRL's conversational form; an empty system prompt means no system message."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user_text}]


def load_templates(
    folder: str | Path = DEFAULT_TEMPLATES_DIR, tasks: Iterable[str] | None = None
) -> dict[str, Template]:
    """Load and check every *.yaml template in `folder`; return the requested tasks, in the order asked.

    Every file is checked even when only some tasks are asked for, so a broken template fails early.

    Raises:
        FileNotFoundError: the folder is missing or holds no templates.
        ValueError: a template is malformed, two files define one task, or a requested task has no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"templates folder {_shown(folder)} not found: pass --templates_dir with a folder of task .yaml files"
        )
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not paths:
        raise FileNotFoundError(
            f"{_shown(folder)} holds no .yaml templates: add one file per task (see data_templates/README.md)"
        )
    templates: dict[str, Template] = {}
    for path in paths:
        template = load_template(path)
        if template.task in templates:
            raise ValueError(
                f"{_shown(path)}: task {template.task!r} is already defined in {_shown(templates[template.task].path)}"
                "; give each task its own name"
            )
        templates[template.task] = template
    if tasks is None:
        return templates
    wanted = list(dict.fromkeys(tasks))
    unknown = [task for task in wanted if task not in templates]
    if unknown:
        raise ValueError(
            f"no template for task {unknown[0]!r} in {_shown(folder)}; tasks there are: {', '.join(templates)}"
        )
    return {task: templates[task] for task in wanted}


def load_template(path: str | Path) -> Template:
    """Load and check one template file; every error names the file and says what to change."""
    path = Path(path)
    shown = _shown(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{shown}: not valid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise ValueError(f"{shown}: expected a mapping with the keys {', '.join(KEYS)}")
    missing = [key for key in KEYS if key not in spec]
    if missing:
        raise ValueError(f"{shown}: missing key(s) {', '.join(missing)}; a template has the keys {', '.join(KEYS)}")
    extra = [key for key in spec if key not in KEYS]
    if extra:
        raise ValueError(f"{shown}: unknown key(s) {', '.join(map(str, extra))}; the keys are {', '.join(KEYS)}")

    task, source, splits, prompts, response = (spec[key] for key in KEYS)
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"{shown}: task must be a non-empty name, got {task!r}")
    if source not in SOURCE_FIELDS:
        raise ValueError(f"{shown}: source {source!r} is unknown; sources are: {', '.join(SOURCE_FIELDS)}")
    if not isinstance(splits, list) or not splits or any(split not in SPLITS for split in splits):
        raise ValueError(f"{shown}: splits must be a non-empty list drawn from {list(SPLITS)}, got {splits!r}")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{shown}: prompts must be a non-empty list of non-empty strings (paraphrases)")
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"{shown}: response must be a non-empty string, e.g. {SID_RESPONSE!r}")

    fields = SOURCE_FIELDS[source]
    texts = [(f"prompt {number}", text) for number, text in enumerate(prompts, 1)] + [("response", response)]
    for where, text in texts:
        for name in _placeholders(text, f"{shown}: {where}"):
            if name not in fields:
                raise ValueError(
                    f"{shown}: {where} uses {{{name}}}; fields for source {source!r} are: {', '.join(fields)}"
                )
    if {"grpo", "eval"} & set(splits) and (source != "sequence" or response != SID_RESPONSE):
        raise ValueError(
            f"{shown}: splits grpo and eval need source: sequence and response: {SID_RESPONSE!r} "
            "(rewards and metrics compare SIDs); use splits: [sft] for other tasks"
        )
    return Template(task.strip(), source, tuple(dict.fromkeys(splits)), tuple(prompts), response, path)


def _placeholders(text: str, where: str = "template") -> frozenset[str]:
    """Names inside `{...}` (format specs dropped); `{{` and `}}` are literal braces."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ValueError(f"{where}: {err} in {text!r}; write a literal brace as {{{{ or }}}}") from err
    return frozenset(name for _, name, _, _ in parsed if name is not None)


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is inside it, so messages stay short."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
