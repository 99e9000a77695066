"""Constrained decoding over a catalog's Semantic IDs.

- `trie.SIDTrie`: the catalog's valid SID prefixes as tensors (imports torch only).
- `processor.SIDConstraint`: a LogitsProcessor that keeps HF `generate` on catalog SIDs.
- `beam.sid_beam_search` / `beam.sample_sids` / `beam.topk_items`: the dedicated, faster SID search.

Names are resolved on first use, so `from align.decode import SIDTrie` does not import transformers.
"""

import importlib

_EXPORTS = {
    "SIDTrie": "align.decode.trie",
    "SIDConstraint": "align.decode.processor",
    "SIDBeams": "align.decode.beam",
    "sid_beam_search": "align.decode.beam",
    "sample_sids": "align.decode.beam",
    "topk_items": "align.decode.beam",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
