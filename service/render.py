"""The JSON body of a recommendation list, joined from per-item fragments written at load time.

Building a ``RecommendedItem`` per result, then a ``Recommendations`` that FastAPI validates
again before pydantic serialises it, costs more than the search behind it. An item's id, title
and genres never change while a version is served, so their JSON is written once per item and a
request only adds the scores. The bytes are those pydantic writes for :class:`Recommendations`
(``tests/service/test_render.py`` checks it); the endpoints keep it as their ``response_model``,
so the OpenAPI documentation is unchanged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence

import numpy as np

_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
#: A str as a JSON string, as ``_dumps`` writes it (non-ASCII kept).
_string = json.encoder.encode_basestring


def item_fragments(
    external_ids: Iterable[object], titles: Iterable[str | None], genres: Iterable[Sequence[str]]
) -> list[str]:
    """Per item, its ``RecommendedItem`` JSON up to the score: ``{"item_id":..,"score":``.

    Written with the json module's string encoder (what ``json.dumps`` calls for each string)
    rather than a ``json.dumps`` per item, whose per-call set-up took seconds of a service start
    at 62k items."""
    return [
        f'{{"item_id":{_string(str(item))},"title":{"null" if title is None else _string(str(title))},'
        f'"genres":[{",".join(_string(str(name)) for name in names)}],"score":'
        for item, title, names in zip(external_ids, titles, genres, strict=True)
    ]


def recommendations_json(
    fragments: Sequence[str],
    user_id: str | None,
    item_ids: np.ndarray,
    scores: np.ndarray,
    model_version: str,
    strategy: str,
    recommendation_id: str,
) -> bytes:
    """A ``Recommendations`` body; ``scores`` are finite (searches leave excluded items out)."""
    items = ",".join(
        f"{fragments[item]}{score!r}}}"
        for item, score in zip(item_ids.tolist(), scores.tolist(), strict=True)
    )
    return (
        f'{{"user_id":{_dumps(user_id)},"items":[{items}],'
        f'"model_version":{_dumps(model_version)},"strategy":{_dumps(strategy)},'
        f'"recommendation_id":{_dumps(recommendation_id)}}}'
    ).encode()
