"""The fields a prompt template can use: the only place they are defined.

A template names a source (data_templates/README.md). The source decides which `{field}` placeholders exist and
how each value is made from the run directory: `item` fields from one catalog item, `sequence` fields from one
user's history and next item. Text is cleaned (whitespace collapsed) and capped, because every prompt token costs
training time.
"""

from collections.abc import Mapping, Sequence

# Caps in characters; longer text is cut at a word boundary and ends with "…".
TITLE_CHARS = 120
HISTORY_TITLE_CHARS = 60
DESCRIPTION_CHARS = 200
CATEGORIES_CHARS = 100

ITEM_FIELDS: dict[str, str] = {
    "sid": "the item's Semantic ID, e.g. <a_12><b_3><c_7>",
    "title": f"the item's title (at most {TITLE_CHARS} characters)",
    "description": f"the item's description (at most {DESCRIPTION_CHARS} characters)",
    "brand": "the item's brand",
    "categories": f"the item's categories as one string (at most {CATEGORIES_CHARS} characters)",
}
SEQUENCE_FIELDS: dict[str, str] = {
    "history_sids": "the SIDs of the last items of the history, oldest first, written one after another (a SID's "
    "level letters delimit it; separators would cost two tokens per item)",
    "history_titles": (
        f"the titles of the same items (untitled ones left out), each in double quotes, cut to {HISTORY_TITLE_CHARS} "
        'characters, joined by "; "'
    ),
    "target_sid": "the SID of the next item (what the model should answer)",
    "target_title": f"the title of the next item (at most {TITLE_CHARS} characters)",
    "n_history": "how many items history_sids and history_titles hold",
}
SOURCE_FIELDS: dict[str, dict[str, str]] = {"item": ITEM_FIELDS, "sequence": SEQUENCE_FIELDS}


def clean_text(text: str | None, max_chars: int) -> str:
    """Collapse whitespace and cap the length, cutting at a word boundary when one is near the cap."""
    text = " ".join((text or "").split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if text[max_chars - 1] != " " and space >= max_chars // 2:  # mid-word: drop the partial word
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def item_fields(item: Mapping, sid: str) -> dict[str, str]:
    """Fields of source `item`.

    Args:
        item: a row of catalog/items.jsonl.
        sid: the item's SID string (align.tokens.format_sid).
    """
    return {
        "sid": sid,
        "title": clean_text(item.get("title"), TITLE_CHARS),
        "description": clean_text(item.get("description"), DESCRIPTION_CHARS),
        "brand": clean_text(item.get("brand"), TITLE_CHARS),
        "categories": clean_text(item.get("categories"), CATEGORIES_CHARS),
    }


def history_fields(
    history: Sequence[str], items: Mapping[str, Mapping], sids: Mapping[str, str], max_history: int
) -> dict[str, str | int]:
    """The history part of source `sequence`: what a recommender sees at inference time too.

    Args:
        history: item ids, oldest first; only the last `max_history` are shown.
        items: item id -> catalog row.
        sids: item id -> SID string.
        max_history: how many of the most recent items to keep.
    """
    shown = list(history)[-max_history:] if max_history > 0 else []
    titles = (clean_text(items[item_id].get("title"), HISTORY_TITLE_CHARS) for item_id in shown)
    return {
        "history_sids": "".join(sids[item_id] for item_id in shown),
        "history_titles": "; ".join(f'"{title}"' for title in titles if title),
        "n_history": len(shown),
    }


def sequence_fields(
    history: Sequence[str],
    target: str,
    items: Mapping[str, Mapping],
    sids: Mapping[str, str],
    max_history: int,
) -> dict[str, str | int]:
    """Fields of source `sequence`: a history (see history_fields) and the item that came next."""
    return {
        **history_fields(history, items, sids, max_history),
        "target_sid": sids[target],
        "target_title": clean_text(items[target].get("title"), TITLE_CHARS),
    }
