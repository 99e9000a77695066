"""Parse a stage's dataclasses from a flat YAML recipe plus command-line overrides (TRL's TrlParser)."""

from typing import Any


def parse_args(types: tuple[type, ...], argv: list[str] | None, *, prog: str, doc: str | None) -> tuple[Any, ...]:
    """Return one instance per dataclass in `types`; `--config FILE.yaml` supplies defaults, flags override."""
    import argparse

    from trl import TrlParser

    parser = TrlParser(
        types, prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return tuple(parser.parse_args_and_config(argv))
