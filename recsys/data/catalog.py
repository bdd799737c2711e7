"""Item and user metadata aligned to matrix indices, for display and feature-based models.

:func:`item_columns` reads the item catalogue into plain arrays (what a service worker needs, so
it does not import pandas, and with it pyarrow); :func:`item_catalog` and :func:`user_catalog`
give the same as DataFrames for training and evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, Text, cast, select

from recsys.data.interactions import IdMap
from recsys.db.models import Item, User

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ItemColumns:
    """The item catalogue, one entry per item index (entry ``i`` is ``items.external_ids[i]``)."""

    titles: np.ndarray
    """object: the title, None when unknown."""
    genres: list[list[str]]
    """From ``attributes["genres"]`` (a list, or an "A|B" string); empty when absent."""
    attributes: np.ndarray
    """object: a dict per item (a fresh one each, empty for an id the items table lacks)."""


def item_columns(engine: Engine, items: IdMap) -> ItemColumns:
    """Titles, genres and attributes of the items of ``items``, in its order. An id of the map
    that the items table lacks gets an empty entry instead of shifting the others."""
    # The attributes come as JSON text and are decoded in one call: decoding them row by row (the
    # column type's own processing) took seconds of a service start at 62k items.
    query = select(Item.external_id, Item.title, cast(Item.attributes, Text))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    external_ids, titles, texts = zip(*rows, strict=True) if rows else ((), (), ())
    aligned = _align(items, external_ids, {"title": titles, "attributes": _decode_json(texts)})
    return ItemColumns(aligned["title"], [_genres(a) for a in aligned["attributes"]], aligned["attributes"])


def item_catalog(engine: Engine, items: IdMap) -> pd.DataFrame:
    """:func:`item_columns` as a DataFrame with one row per item index and the columns
    ``external_id``, ``title``, ``genres`` and ``attributes``."""
    import pandas as pd

    columns = item_columns(engine, items)
    return pd.DataFrame(
        {
            "external_id": pd.Series(items.to_list(), dtype=object),
            # dtype=object keeps None for a missing title: pandas would infer strings with NaN.
            "title": pd.Series(columns.titles, dtype=object),
            "genres": pd.Series(columns.genres, dtype=object),
            "attributes": pd.Series(columns.attributes, dtype=object),
        }
    )


def _decode_json(texts: Sequence[str | None]) -> list[Any]:
    """Each JSON text decoded (None stays None), in one call of the decoder for all of them."""
    return list(json.loads("[" + ",".join("null" if text is None else text for text in texts) + "]"))


def user_catalog(engine: Engine, users: IdMap) -> pd.DataFrame:
    """One row per user index with columns ``external_id`` and ``attributes`` (dict)."""
    import pandas as pd

    with engine.connect() as connection:
        rows = connection.execute(select(User.external_id, User.attributes)).all()
    external_ids, attributes = zip(*rows, strict=True) if rows else ((), ())
    aligned = _align(users, external_ids, {"attributes": attributes})
    return pd.DataFrame(
        {
            "external_id": pd.Series(users.to_list(), dtype=object),
            "attributes": pd.Series(aligned["attributes"], dtype=object),
        }
    )


def _align(ids: IdMap, stored_ids: Sequence[str], columns: dict[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Each stored column (rows keyed by ``stored_ids``) reordered to the positions of ``ids``:
    None where ``ids`` has an id not stored, and ``attributes`` a dict in every row (each its
    own: the decoded ones are already fresh objects, not shared)."""
    rows = ids.indices(stored_ids)  # each stored row's position in ids, -1 when ids lacks it
    known = rows >= 0
    aligned = {}
    for name, values in columns.items():
        column = np.full(len(ids), None, dtype=object)
        column[rows[known]] = np.fromiter(values, dtype=object, count=len(rows))[known]
        aligned[name] = column
    if "attributes" in aligned:
        aligned["attributes"] = np.fromiter(
            (a if isinstance(a, dict) else {} for a in aligned["attributes"]), dtype=object, count=len(ids)
        )
    return aligned


def _genres(attributes: dict[str, Any]) -> list[str]:
    genres = attributes.get("genres")
    if genres is None:
        return []
    if isinstance(genres, str):  # a hand-loaded "A|B" string rather than the ingested list
        return [name.strip() for name in genres.split("|") if name.strip()]
    return [str(name) for name in genres]
