"""Item and user metadata aligned to matrix indices, for display and feature-based models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Text, cast, select

from recsys.data.interactions import IdMap
from recsys.db.models import Item, User


def item_catalog(engine: Engine, items: IdMap) -> pd.DataFrame:
    """One row per item index (row ``i`` is item ``items.external_ids[i]``).

    Columns: ``external_id``, ``title`` (None when unknown), ``genres`` (list of str, from
    ``attributes["genres"]``; empty when absent) and ``attributes`` (dict). An id of the map that
    the items table lacks gets an empty row instead of shifting the others.
    """
    # The attributes come as JSON text and are decoded in one call: decoding them row by row (the
    # column type's own processing) took seconds of a service start at 62k items.
    query = select(Item.external_id, Item.title, cast(Item.attributes, Text))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    external_ids, titles, texts = zip(*rows, strict=True) if rows else ((), (), ())
    stored = pd.DataFrame(
        {
            "external_id": pd.Series(external_ids, dtype=object),
            "title": pd.Series(titles, dtype=object),
            "attributes": pd.Series(_decode_json(texts), dtype=object),
        }
    )
    catalog = _align(stored, items, ["title", "attributes"])
    catalog.insert(2, "genres", pd.Series([_genres(a) for a in catalog["attributes"]], dtype=object))
    return catalog


def _decode_json(texts: Sequence[str | None]) -> list[Any]:
    """Each JSON text decoded (None stays None), in one call of the decoder for all of them."""
    return list(json.loads("[" + ",".join("null" if text is None else text for text in texts) + "]"))


def user_catalog(engine: Engine, users: IdMap) -> pd.DataFrame:
    """One row per user index with columns ``external_id`` and ``attributes`` (dict)."""
    with engine.connect() as connection:
        rows = connection.execute(select(User.external_id, User.attributes)).all()
    stored = pd.DataFrame(rows, columns=["external_id", "attributes"], dtype=object)
    return _align(stored, users, ["attributes"])[["external_id", "attributes"]]


def _align(stored: pd.DataFrame, ids: IdMap, columns: list[str]) -> pd.DataFrame:
    """Reorder ``stored`` (keyed by external_id) to the positions of ``ids``."""
    external_ids = ids.to_list()
    position = pd.Index(stored["external_id"].astype(str)).get_indexer(pd.Index(external_ids))
    found = position >= 0
    aligned: dict[str, Any] = {"external_id": pd.Series(external_ids, dtype=object)}
    for column in columns:
        values = np.full(len(ids), None, dtype=object)
        values[found] = stored[column].to_numpy(dtype=object)[position[found]]
        # dtype=object keeps None for a missing title: pandas would infer a string column with NaN.
        aligned[column] = pd.Series(values, dtype=object)
    # Each row its own dict (the decoded ones are already fresh objects, not shared).
    aligned["attributes"] = pd.Series(
        [a if isinstance(a, dict) else {} for a in aligned["attributes"]], dtype=object
    )
    return pd.DataFrame(aligned)


def _genres(attributes: dict[str, Any]) -> list[str]:
    genres = attributes.get("genres")
    if genres is None:
        return []
    if isinstance(genres, str):  # a hand-loaded "A|B" string rather than the ingested list
        return [name.strip() for name in genres.split("|") if name.strip()]
    return [str(name) for name in genres]
