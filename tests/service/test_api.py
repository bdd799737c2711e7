"""Read endpoints: recommendations, filters, fallback, similar items, fold-in, health, OpenAPI, and
the request features (ids with reserved characters, exclusions, paging, request and list ids, CORS)."""

from __future__ import annotations

import re
from urllib.parse import quote

import numpy as np
from fastapi.testclient import TestClient

from recsys.registry.registry import VersionInfo
from recsys.settings import Settings
from service.app import create_app
from tests.service.conftest import API_KEY, N_ITEMS, item_genres, popularity_counts, seen_items


def ranking_without(excluded: set[int]) -> list[str]:
    counts = popularity_counts()
    order = np.argsort(-counts, kind="stable")
    return [f"i{i}" for i in order if i not in excluded]


def test_known_user_gets_unseen_popular_items(client: TestClient, version: VersionInfo) -> None:
    response = client.get("/users/u3/recommendations", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "personalized" and body["model_version"] == version.version
    ids = [item["item_id"] for item in body["items"]]
    assert ids == ranking_without(set(seen_items(3)))[:5]
    first = body["items"][0]
    index = int(first["item_id"][1:])
    assert first["title"] == f"Movie {index}" and first["genres"] == item_genres(index)
    assert first["score"] == popularity_counts()[index]


def test_seen_items_can_be_included(client: TestClient) -> None:
    body = client.get("/users/u0/recommendations", params={"k": 3, "exclude_seen": False}).json()
    assert [item["item_id"] for item in body["items"]] == ranking_without(set())[:3]


def test_genre_filters(client: TestClient) -> None:
    body = client.get("/users/u1/recommendations", params={"k": 50, "include_genres": "Drama"}).json()
    assert body["items"] and all("Drama" in item["genres"] for item in body["items"])
    expected = [i for i in range(N_ITEMS) if "Drama" in item_genres(i) and i not in seen_items(1)]
    assert len(body["items"]) == len(expected)
    params = {"k": 50, "exclude_genres": ["Comedy", "Horror"]}
    body = client.get("/users/u1/recommendations", params=params).json()
    assert body["items"]
    assert not any({"Comedy", "Horror"} & set(item["genres"]) for item in body["items"])
    response = client.get("/users/u1/recommendations", params={"include_genres": "Western"})
    # Every 422 has the documented shape: a list of problems, each with a location and a message.
    assert response.status_code == 422 and "'Western'" in response.json()["detail"][0]["msg"]


def metric(client: TestClient, sample: str) -> float:
    """The value of one sample line of /metrics (0 when absent); metrics are process-wide."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_unknown_user_gets_popular_items(client: TestClient) -> None:
    fallbacks = metric(client, 'recsys_fallbacks_total{reason="unknown_user"}')
    body = client.get("/users/nobody/recommendations", params={"k": 4}).json()
    assert body["strategy"] == "popular"
    assert [item["item_id"] for item in body["items"]] == ranking_without(set())[:4]
    genre = client.get("/users/nobody/recommendations", params={"include_genres": "Horror"}).json()
    assert all("Horror" in item["genres"] for item in genre["items"])
    assert metric(client, 'recsys_fallbacks_total{reason="unknown_user"}') == fallbacks + 2


def test_k_outside_bounds_names_the_field(client: TestClient) -> None:
    for k in (0, 1001, "many"):
        response = client.get("/users/u1/recommendations", params={"k": k})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "k"]
    assert client.get("/items/i1/similar", params={"k": 0}).status_code == 422
    response = client.get("/users/u1/recommendations", params={"k": 2, "colour": "red"})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "colour"]]
    # A repeated single-valued parameter counts once, the last one (as FastAPI reads it).
    body = client.get("/users/u1/recommendations", params=[("k", "5"), ("k", "2")]).json()
    assert len(body["items"]) == 2


def test_user_id_outside_bounds_names_the_path_parameter(client: TestClient) -> None:
    # The endpoint is a DirectRoute (service/routing.py): its path is validated without FastAPI's
    # dependency machinery, with the answer FastAPI gives.
    for user_id, error in (("", "string_too_short"), ("u" * 256, "string_too_long")):
        response = client.get(f"/users/{user_id}/recommendations")
        assert response.status_code == 422
        [detail] = response.json()["detail"]
        assert (detail["loc"], detail["type"]) == (["path", "user_id"], error)
    assert client.get(f"/users/{'u' * 255}/recommendations").json()["strategy"] == "popular"


def test_similar_items(client: TestClient) -> None:
    body = client.get("/items/i2/similar", params={"k": 5}).json()
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 5 and "i2" not in ids
    response = client.get("/items/missing-item/similar")
    assert response.status_code == 404 and "'missing-item'" in response.json()["detail"]


def test_history_recommendations(client: TestClient) -> None:
    response = client.post("/recommendations", json={"items": ["i0", "i5"], "k": 3})
    body = response.json()
    assert response.status_code == 200 and body["strategy"] == "folded-in" and body["user_id"] is None
    assert [item["item_id"] for item in body["items"]] == ranking_without({0, 5})[:3]
    response = client.post("/recommendations", json={"items": ["i0", "nope", "gone"]})
    assert response.status_code == 404 and "'nope', 'gone'" in response.json()["detail"]


def test_malformed_bodies_name_the_field(client: TestClient) -> None:
    cases = [
        ({"k": 3}, ["body", "items"]),
        ({"items": ["i1"], "k": 5000}, ["body", "k"]),
        ({"items": [], "k": 5}, ["body", "items"]),
        ({"items": ["i1"], "colour": "red"}, ["body", "colour"]),
    ]
    for body, loc in cases:
        response = client.post("/recommendations", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"] == loc
    response = client.post("/recommendations", json={"items": ["i1", "i2"], "values": [1.0]})
    assert response.status_code == 422 and "values has 1 entries" in response.text
    response = client.post(
        "/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_health_ready_and_metrics(client: TestClient, version: VersionInfo) -> None:
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "model_version": version.version, "database": True, "detail": None}
    served = (
        'recsys_http_requests_total{endpoint="/users/{user_id}/recommendations",method="GET",status="200"}'
    )
    timed = 'recsys_http_request_duration_seconds_count{endpoint="/users/{user_id}/recommendations"}'
    before = metric(client, served), metric(client, timed)
    client.get("/users/u1/recommendations")
    client.get("/users/u2/recommendations")
    assert (metric(client, served), metric(client, timed)) == (before[0] + 2, before[1] + 2)
    metrics = client.get("/metrics").text
    assert f'recsys_model_loaded{{model="popularity",version="{version.version}"}} 1.0' in metrics


def test_openapi_lists_operations_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = {
        (path, method): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    expected = {
        ("/users/{user_id}/recommendations", "get"): ("get_user_recommendations", {"422", "503"}),
        ("/recommendations", "post"): ("recommend_for_history", {"404", "422", "503"}),
        ("/items/{item_id}/similar", "get"): ("get_similar_items", {"404", "422", "503"}),
        ("/interactions", "post"): ("post_interactions", {"401", "422", "503"}),
        ("/admin/reload", "post"): ("reload_model", {"401", "503"}),
        ("/ready", "get"): ("ready", {"503"}),
        ("/health", "get"): ("health", set()),
        ("/metrics", "get"): ("metrics", set()),
    }
    for key, (operation_id, errors) in expected.items():
        assert operations[key]["operationId"] == operation_id
        assert errors <= set(operations[key]["responses"]), key


# --- request features -------------------------------------------------------------------------


def ids_of(body: dict[str, object]) -> list[str]:
    return [item["item_id"] for item in body["items"]]  # type: ignore[index, union-attr]


def test_ids_with_reserved_characters_reach_the_endpoints(client: TestClient) -> None:
    user = "shop/eu 42?&#%"
    stored = client.post(
        "/interactions", json={"user_id": user, "item_id": "i0"}, headers={"X-API-Key": API_KEY}
    )
    assert stored.status_code == 201
    response = client.get(f"/users/{quote(user, safe='')}/recommendations", params={"k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user and body["strategy"] == "folded-in" and "i0" not in ids_of(body)
    # Unencoded slashes work too; an unknown item id with '/' is named in the 404 (not a bare 404).
    assert client.get("/users/shop/eu/recommendations").json()["user_id"] == "shop/eu"
    response = client.get(f"/items/{quote('cat/7', safe='')}/similar")
    assert response.status_code == 404 and "'cat/7'" in response.json()["detail"]


def test_ids_in_paths_and_queries_are_read_as_ingestion_stores_them(client: TestClient) -> None:
    """Stored ids are trimmed and NFC-normalised: " café " with a combining accent, sent in a path,
    names the user stored as "café" (it got popular items, and DELETE answered 404)."""
    key = {"X-API-Key": API_KEY}
    decomposed = " cafe\u0301 "
    client.post("/interactions", json={"user_id": decomposed, "item_id": "i0"}, headers=key)
    body = client.get(f"/users/{quote(decomposed, safe='')}/recommendations", params={"k": 3}).json()
    assert body["user_id"] == "caf\u00e9" and body["strategy"] == "folded-in" and "i0" not in ids_of(body)
    similar = client.get("/items/%20i2%20/similar", params={"k": 3, "exclude_items": " i3"})
    assert similar.status_code == 200 and "i3" not in ids_of(similar.json())
    history = client.post("/recommendations", json={"items": [" i2"], "exclude_items": ["i4 "], "k": 3})
    assert history.status_code == 200 and not {"i2", "i4"} & set(ids_of(history.json()))
    assert client.delete(f"/users/{quote(decomposed, safe='')}", headers=key).json()["id"] == "caf\u00e9"


def test_ids_with_slashes_can_be_deleted(client: TestClient) -> None:
    key = {"X-API-Key": API_KEY}
    event = {"user_id": "shop/eu/42", "item_id": "cat/dvd/7", "event_id": "evt/1"}
    client.post("/interactions", json=[event, {**event, "event_id": "evt/2", "item_id": "i1"}], headers=key)
    for path, target in (("interactions/evt%2F1", "interaction"), ("items/cat%2Fdvd%2F7", "item")):
        response = client.delete(f"/{path}", headers=key)
        assert response.status_code == 200 and response.json()["target"] == target, response.json()
    assert client.delete("/users/shop/eu/42", headers=key).json()["interactions"] == 1  # unencoded too
    assert client.get("/users/shop%2Feu%2F42/recommendations").json()["strategy"] == "popular"
    for other in ("/users/u1/recommendations", "/items/i1/similar"):  # not ids: another resource
        assert client.delete(other, headers=key).status_code == 405


def test_exclude_items_leaves_them_out(client: TestClient) -> None:
    full = ids_of(client.get("/users/u3/recommendations", params={"k": 5}).json())
    params = {"k": 5, "exclude_items": [full[0], full[2], "not-in-model"]}
    body = client.get("/users/u3/recommendations", params=params).json()
    excluded = set(seen_items(3)) | {int(full[0][1:]), int(full[2][1:])}
    assert ids_of(body) == ranking_without(excluded)[:5]
    history = {"items": ["i0"], "k": 4, "exclude_items": ["i1", "i2"]}
    assert ids_of(client.post("/recommendations", json=history).json()) == ranking_without({0, 1, 2})[:4]
    similar = client.get("/items/i2/similar", params={"k": 19, "exclude_items": ["i5"]}).json()
    assert "i5" not in ids_of(similar) and len(similar["items"]) == N_ITEMS - 2


def test_offset_pages_through_the_list(client: TestClient) -> None:
    full = ids_of(client.get("/users/u3/recommendations", params={"k": 9}).json())
    pages = [
        ids_of(client.get("/users/u3/recommendations", params={"k": 3, "offset": offset}).json())
        for offset in (0, 3, 6)
    ]
    assert [item for page in pages for item in page] == full
    history = [
        ids_of(client.post("/recommendations", json={"items": ["i0"], "k": 2, "offset": o}).json())
        for o in (0, 2)
    ]
    assert [item for page in history for item in page] == ranking_without({0})[:4]
    similar = ids_of(client.get("/items/i2/similar", params={"k": 6}).json())
    assert ids_of(client.get("/items/i2/similar", params={"k": 3, "offset": 3}).json()) == similar[3:]
    assert client.get("/users/u3/recommendations", params={"offset": -1}).status_code == 422
    past_the_end = client.get("/users/u3/recommendations", params={"offset": 500}).json()
    assert past_the_end["items"] == []


def test_genre_filters_on_similar_items(client: TestClient) -> None:
    body = client.get("/items/i2/similar", params={"k": 20, "include_genres": "Drama"}).json()
    expected = [i for i in range(N_ITEMS) if "Drama" in item_genres(i) and i != 2]
    assert sorted(int(item[1:]) for item in ids_of(body)) == expected
    body = client.get("/items/i2/similar", params={"k": 20, "exclude_genres": ["Comedy", "Horror"]}).json()
    assert ids_of(body) and not any({"Comedy", "Horror"} & set(item["genres"]) for item in body["items"])
    response = client.get("/items/i2/similar", params={"include_genres": "Western"})
    assert response.status_code == 422 and "'Western'" in response.json()["detail"][0]["msg"]


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    sent = client.get("/users/u1/recommendations", headers={"X-Request-ID": "req-42.a"})
    assert sent.headers["X-Request-ID"] == "req-42.a"
    made = [
        client.get(path).headers["X-Request-ID"]
        for path in ("/users/u1/recommendations", "/health", "/nowhere")
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made) and len(set(made)) == 3
    unusable = client.get("/health", headers={"X-Request-ID": "x" * 200}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", unusable)


def test_recommendation_lists_carry_their_own_id(client: TestClient) -> None:
    bodies = [
        client.get("/users/u1/recommendations").json(),
        client.get("/users/u1/recommendations").json(),
        client.post("/recommendations", json={"items": ["i1"]}).json(),
        client.get("/items/i1/similar").json(),
    ]
    ids = [body["recommendation_id"] for body in bodies]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids) and len(set(ids)) == 4


def test_cors_is_off_by_default_and_configurable(settings: Settings, version: VersionInfo) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(settings)) as plain:
        response = plain.options("/users/u1/recommendations", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    allowed = settings.model_copy(update={"cors_origins": ["https://shop.example"]})
    with TestClient(create_app(allowed)) as cors:
        response = cors.options("/users/u1/recommendations", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        got = cors.get("/users/u1/recommendations", headers={"Origin": "https://shop.example"})
        assert got.headers["access-control-allow-origin"] == "https://shop.example"
        assert "X-Request-ID" in got.headers["access-control-expose-headers"]
        other = cors.get("/users/u1/recommendations", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_openapi_documents_the_request_features_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/users/{user_id}/recommendations", "/items/{item_id}/similar"):
        operation = spec["paths"][path]["get"]
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        for name in ("offset", "exclude_items", "include_genres", "exclude_genres"):
            assert parameters[name]["schema"]["examples"], (path, name)
        assert "X-Request-ID" in operation["responses"]["200"]["headers"]
        assert "curl" in operation["description"]
    history = spec["components"]["schemas"]["HistoryRequest"]
    assert {"offset", "exclude_items"} <= set(history["properties"]) and history["examples"]
    assert "recommendation_id" in spec["components"]["schemas"]["Recommendations"]["required"]
