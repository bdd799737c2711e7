"""Top-k item retrieval: the index contract, the exact reference and the FAISS indexes.

FAISS is imported only when an index is built or loaded, so importing ``recsys.index`` (which
every model does for :class:`ExactIndex`) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import ArtifactError
from recsys.index.base import PAD_ID, ItemIndex
from recsys.index.exact import ExactIndex

if TYPE_CHECKING:
    from recsys.settings import Settings

#: Name of the sub-folder of a model version that holds its index.
INDEX_DIR = "index"


def build_index(
    item_vectors: np.ndarray,
    settings: Settings,
    queries: np.ndarray | None = None,
) -> ItemIndex:
    """The serving index for these item vectors: exact FAISS up to ``settings.exact_index_max_items``
    items, HNSW above with recall@10 >= ``settings.min_index_recall`` measured on ``queries``
    (a sample of user vectors; item vectors when omitted)."""
    from recsys.index.faiss_index import FaissIndex

    if len(item_vectors) <= settings.exact_index_max_items:
        return FaissIndex.flat(item_vectors)
    return FaissIndex.hnsw(item_vectors, settings.min_index_recall, queries=queries)


def load_index(path: Path) -> ItemIndex:
    """Read an index saved by :meth:`ItemIndex.save` (FAISS or the numpy exact index)."""
    from recsys.index.faiss_index import META_FILE, FaissIndex

    if (path / META_FILE).is_file():
        return FaissIndex.load(path)
    if (path / "item_vectors.npy").is_file():
        return ExactIndex.load(path)
    raise ArtifactError(f"{path} holds no saved index ({META_FILE} or item_vectors.npy)")


def build_for_version(registry: Any, version: str, settings: Settings) -> ItemIndex:
    """Build the index of a registered version from its item vectors and attach it as ``index/``.

    Recall is measured with a sample of the version's own user vectors as queries, which is what
    the service will search with.
    """
    loaded = registry.load(version)
    model = loaded.model
    if model.item_factors is None:
        raise ArtifactError(f"version {version} has no item vectors to index")
    index = build_index(model.item_factors, settings, queries=model.user_factors)
    registry.attach(version, INDEX_DIR, index.save)
    return index


__all__ = [
    "INDEX_DIR",
    "PAD_ID",
    "ExactIndex",
    "ItemIndex",
    "build_for_version",
    "build_index",
    "load_index",
]
