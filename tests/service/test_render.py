"""The hand-joined recommendation JSON is byte for byte what pydantic writes for the schema."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from service.render import item_fragments, recommendations_json
from service.schemas import Recommendations, RecommendedItem


def test_rendered_body_equals_pydantic_serialisation() -> None:
    external = np.array(["a", 'quote " and \\ slash', "ünïcødé ✓", "tab\tnew\nline"], dtype=object)
    titles = ["Plain (1995)", None, 'Amélie \u2013 "Le fabuleux"', "控制\x01"]
    genres = [["Drama", "Romance"], [], ["Comedy"], ["Sci-Fi"]]
    fragments = item_fragments(external, titles, genres)
    item_ids = np.array([2, 0, 3, 1])
    scores = np.array([12.0, 1.0161633, -0.25, 0.0], dtype=np.float32)
    for user_id in ("u1", None, 'ü"ser'):
        body = recommendations_json(fragments, user_id, item_ids, scores, "ials-v1", "folded-in", 'r"1')
        expected = Recommendations(
            user_id=user_id,
            items=[
                RecommendedItem(item_id=external[i], title=titles[i], genres=genres[i], score=float(score))
                for i, score in zip(item_ids.tolist(), scores.tolist(), strict=True)
            ],
            model_version="ials-v1",
            strategy="folded-in",
            recommendation_id='r"1',
        )
        assert body == expected.model_dump_json().encode()
    empty = recommendations_json(
        fragments, "u1", np.zeros(0, int), np.zeros(0, np.float32), "v", "popular", "r"
    )
    assert Recommendations.model_validate_json(empty).items == []


def test_endpoint_body_validates_against_the_schema(client: TestClient) -> None:
    response = client.get("/users/u4/recommendations", params={"k": 6})
    assert response.headers["content-type"] == "application/json"
    body = Recommendations.model_validate_json(response.content)
    assert len(body.items) == 6 and body.strategy == "personalized"
    assert body.items[0].title is not None and body.items[0].genres
