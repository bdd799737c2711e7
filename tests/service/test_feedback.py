"""Writes: API key, stored feedback changing the next answer, fold-in, and the database going away."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from recsys.data.interactions import IdMap, Interactions
from recsys.db.engine import session_scope
from recsys.db.models import Interaction, Item, User
from recsys.index.exact import ExactIndex
from recsys.settings import Settings
from service.app import create_app
from service.deps import INVALID_KEY
from service.state import ServingState, max_interaction_id
from tests.service.conftest import API_KEY, N_ITEMS, N_USERS, seen_items
from tests.vector_model import MeanOfItems

KEY = {"X-API-Key": API_KEY}


def test_missing_and_wrong_keys_get_the_same_401(client: TestClient) -> None:
    event = {"user_id": "u1", "item_id": "i1"}
    missing = client.post("/interactions", json=event)
    wrong = client.post("/interactions", json=event, headers={"X-API-Key": "guess"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == wrong.json() == {"detail": INVALID_KEY}
    assert client.post("/admin/reload").json() == {"detail": INVALID_KEY}


def test_writes_are_refused_without_a_configured_key(settings: Settings, version: object) -> None:
    with TestClient(create_app(settings.model_copy(update={"api_key": None}))) as client:
        response = client.post("/interactions", json={"user_id": "u1", "item_id": "i1"}, headers=KEY)
    assert response.status_code == 401 and "RECSYS_API_KEY" in response.json()["detail"]


def test_feedback_takes_effect_on_the_next_request(client: TestClient) -> None:
    before = client.get("/users/u1/recommendations", params={"k": 3}).json()
    assert before["strategy"] == "personalized"
    top = before["items"][0]["item_id"]
    response = client.post("/interactions", json={"user_id": "u1", "item_id": top, "value": 5}, headers=KEY)
    assert response.status_code == 201
    assert response.json() == {
        "stored": 1,
        "duplicates": 0,
        "conflicting": 0,
        "new_users": [],
        "new_items": [],
        "not_in_model": [],
    }
    after = client.get("/users/u1/recommendations", params={"k": 3}).json()
    assert after["strategy"] == "folded-in"
    ids = [item["item_id"] for item in after["items"]]
    assert top not in ids and ids[:2] == [item["item_id"] for item in before["items"][1:]]
    again = client.post(
        "/interactions", json={"user_id": "u1", "item_id": top, "value": 5, "timestamp": 7}, headers=KEY
    )
    repeat = client.post(
        "/interactions", json={"user_id": "u1", "item_id": top, "value": 5, "timestamp": 7}, headers=KEY
    )
    assert again.json()["stored"] == 1 and repeat.json() == {**again.json(), "stored": 0, "duplicates": 1}


def test_batch_with_new_user_and_new_item(client: TestClient, settings: Settings) -> None:
    batch = [
        {"user_id": "newcomer", "item_id": "i3", "kind": "click"},
        {"user_id": "newcomer", "item_id": "brand-new", "kind": "click"},
    ]
    response = client.post("/interactions", json=batch, headers=KEY)
    assert response.status_code == 201
    assert response.json() == {
        "stored": 2,
        "duplicates": 0,
        "conflicting": 0,
        "new_users": ["newcomer"],
        "new_items": ["brand-new"],
        "not_in_model": ["brand-new"],
    }
    body = client.get("/users/newcomer/recommendations", params={"k": N_ITEMS}).json()
    ids = [item["item_id"] for item in body["items"]]
    assert body["strategy"] == "folded-in" and "i3" not in ids and "brand-new" not in ids
    assert len(ids) == N_ITEMS - 1
    from recsys.db import get_engine

    with session_scope(get_engine(settings.database_url)) as session:
        stored = session.scalar(
            select(func.count())
            .select_from(Interaction)
            .join(User, User.id == Interaction.user_id)  # no foreign key to infer it from
            .where(User.external_id == "newcomer")
        )
        assert stored == 2 and session.scalar(select(Item.id).where(Item.external_id == "brand-new"))


def test_bad_events_name_the_field(client: TestClient) -> None:
    cases = [
        ({"item_id": "i1"}, "user_id"),
        ({"user_id": "u1", "item_id": "i1", "value": "high"}, "value"),
        ({"user_id": "u1", "item_id": "", "value": 1}, "item_id"),
        ({"user_id": "u1", "item_id": "i1", "timestamp": -5}, "timestamp"),
    ]
    for body, field in cases:
        response = client.post("/interactions", json=body, headers=KEY)
        assert response.status_code == 422, body
        assert any(field in error["loc"] for error in response.json()["detail"]), response.json()
    assert client.post("/interactions", json=[], headers=KEY).status_code == 422


def test_feedback_reaches_another_worker(client: TestClient, settings: Settings) -> None:
    """Two apps on one database stand for two uvicorn workers."""
    with TestClient(create_app(settings)) as other:
        assert other.get("/users/u2/recommendations").json()["strategy"] == "personalized"
        client.post("/interactions", json={"user_id": "u2", "item_id": "i15"}, headers=KEY)
        body = other.get("/users/u2/recommendations", params={"k": N_ITEMS}).json()
    assert body["strategy"] == "folded-in"
    assert "i15" not in [item["item_id"] for item in body["items"]]


def test_database_down_reads_served_writes_503(client: TestClient) -> None:
    client.app.state.engine = create_engine("sqlite:////nonexistent-folder/recsys.db")  # type: ignore[attr-defined]
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["database"] is False and ready.json()["ready"] is False
    assert client.get("/users/u1/recommendations").status_code == 200
    assert client.post("/recommendations", json={"items": ["i1"]}).status_code == 200
    response = client.post("/interactions", json={"user_id": "u1", "item_id": "i1"}, headers=KEY)
    assert response.status_code == 503 and "database is unavailable" in response.json()["detail"]


def vector_state(client: TestClient) -> MeanOfItems:
    """Swap a state with random vectors into the app, built directly (no registry)."""
    rng = np.random.default_rng(3)
    model = MeanOfItems()
    model.item_factors = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    model.user_factors = rng.normal(size=(N_USERS, 8)).astype(np.float32)
    users = IdMap(np.array([f"u{u}" for u in range(N_USERS)], dtype=object))
    items = IdMap(np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object))
    pairs = [(u, i) for u in range(N_USERS) for i in seen_items(u)]
    data = Interactions.from_arrays(
        [f"u{u}" for u, _ in pairs], [f"i{i}" for _, i in pairs], [4.0] * len(pairs)
    )
    engine = client.app.state.engine  # type: ignore[attr-defined]

    state = ServingState.build(
        "vectors-v1", model, users, items, data, snapshot_id=max_interaction_id(engine)
    )
    client.app.state.holder.swap(state)  # type: ignore[attr-defined]
    return model


def exact_top(model: MeanOfItems, vector: np.ndarray, excluded: list[int], k: int) -> list[str]:
    exclude = sp.csr_matrix((np.ones(len(excluded)), ([0] * len(excluded), excluded)), shape=(1, N_ITEMS))
    ids, _ = ExactIndex(model.item_factors).search(vector, k, exclude)
    return [f"i{i}" for i in ids[0]]


def test_history_fold_in_matches_the_model(client: TestClient) -> None:
    model = vector_state(client)
    body = client.post("/recommendations", json={"items": ["i4", "i9"], "values": [1.0, 3.0], "k": 5}).json()
    row = sp.csr_matrix(([1.0, 3.0], ([0, 0], [4, 9])), shape=(1, N_ITEMS))
    folded = model.fold_in(row)
    assert body["model_version"] == "vectors-v1"
    assert [item["item_id"] for item in body["items"]] == exact_top(model, folded, [4, 9], 5)
    scores = [item["score"] for item in body["items"]]
    want = folded @ model.item_factors[[int(item["item_id"][1:]) for item in body["items"]]].T
    np.testing.assert_allclose(scores, want[0], rtol=1e-5)


def test_a_history_of_zero_values_gets_popular_items(client: TestClient) -> None:
    """Every model drops zero values, so such a history folded in to a zero vector, which ranked
    the whole catalogue at score 0 in id order; it is no history, and gets the fallback."""
    vector_state(client)
    popular = client.get("/users/nobody/recommendations", params={"k": 10}).json()
    assert popular["strategy"] == "popular"
    ranked = [item["item_id"] for item in popular["items"]]
    client.post("/interactions", json={"user_id": "zero-only", "item_id": "i3", "value": 0}, headers=KEY)
    body = client.get("/users/zero-only/recommendations", params={"k": 4}).json()
    assert body["strategy"] == "popular"
    assert [item["item_id"] for item in body["items"]] == [i for i in ranked if i != "i3"][:4]
    anonymous = client.post("/recommendations", json={"items": ["i3", "i4"], "values": [0, 0], "k": 4}).json()
    assert anonymous["strategy"] == "popular"
    unseen = [item for item in ranked if item not in ("i3", "i4")]
    assert [item["item_id"] for item in anonymous["items"]] == unseen[:4]


def test_history_values_obey_the_input_rules(client: TestClient) -> None:
    """A history holds only values an event could store: POST /interactions refuses -1 and 1e308,
    so POST /recommendations does too, naming each value's position."""
    vector_state(client)
    for values, position, reason in (
        ([1.0, -1.0], 1, "value '-1.0' below the minimum 0"),
        ([1e308, 2.0], 0, "value '1e+308' above the maximum 1e+06"),
    ):
        answer = client.post("/recommendations", json={"items": ["i3", "i4"], "values": values})
        assert answer.status_code == 422, answer.json()
        assert answer.json()["detail"] == [
            {"loc": ["body", "values", position], "msg": reason, "type": "value_error"}
        ]
        stored = client.post(
            "/interactions", json={"user_id": "u1", "item_id": "i3", "value": values[position]}, headers=KEY
        )
        assert stored.status_code == 422  # the same rule at the other door
    assert client.post("/recommendations", json={"items": ["i3"], "values": [5.0]}).status_code == 200


def test_user_vector_is_refreshed_by_feedback(client: TestClient) -> None:
    model = vector_state(client)
    trained = client.get("/users/u5/recommendations", params={"k": 4}).json()
    assert [item["item_id"] for item in trained["items"]] == exact_top(
        model, model.user_factors[5:6], seen_items(5), 4
    )
    client.post("/interactions", json={"user_id": "u5", "item_id": "i17", "value": 2.0}, headers=KEY)
    body = client.get("/users/u5/recommendations", params={"k": 4}).json()
    seen = [*seen_items(5), 17]
    row = sp.csr_matrix(([4.0] * (len(seen) - 1) + [2.0], ([0] * len(seen), seen)), shape=(1, N_ITEMS))
    assert body["strategy"] == "folded-in"
    assert [item["item_id"] for item in body["items"]] == exact_top(model, model.fold_in(row), seen, 4)


# --- input rules at the API: the same as ingestion, client errors are 4xx ----------------------


def post_raw(client: TestClient, body: str) -> tuple[int, object]:
    response = client.post(
        "/interactions",
        content=body.encode("utf-8", "surrogatepass"),
        headers={**KEY, "Content-Type": "application/json"},
    )
    return response.status_code, response.json()


def test_bodies_that_gave_500_or_503_are_422_naming_the_field(client: TestClient) -> None:
    cases = {
        '{"user_id": "u1", "item_id": "i1", "value": NaN}': "value",
        '{"user_id": "u1", "item_id": "i1", "value": Infinity}': "value",
        '{"user_id": "u1", "item_id": "i1", "value": 1e999}': "value",
        '{"user_id": "u1", "item_id": "i1", "value": 1e308}': "value",
        '{"user_id": "u1", "item_id": "i1", "value": -1}': "value",
        '{"user_id": "u1", "item_id": "i1", "value": true}': "value",
        '{"user_id": "\\ud800", "item_id": "i1"}': "user_id",
        '{"user_id": "u\\u0000", "item_id": "i1"}': "user_id",
        '{"user_id": "u1", "item_id": "i1", "timestamp": 9223372036854775808}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": 1e30}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": 1000000000000000000000000000000}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": false}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": 99999999999}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": "9999-12-31T00:00:00Z"}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": "1700000000"}': "timestamp",
        '{"user_id": "u1", "item_id": "i1", "timestamp": "1969-12-31T23:59:59Z"}': "timestamp",
        '[{"user_id": "u1", "item_id": "i1"}, {"user_id": "u1", "item_id": "i2", "value": -5}]': "value",
    }
    for body, field in cases.items():
        status, answer = post_raw(client, body)
        assert status == 422, (body, status, answer)
        assert isinstance(answer, dict) and isinstance(answer["detail"], list), answer
        assert any(field in error["loc"] for error in answer["detail"]), (body, answer)
    status, answer = post_raw(
        client, '[{"user_id": "u1", "item_id": "i1"}, {"user_id": "u1", "item_id": "i2", "value": -5}]'
    )
    assert answer["detail"][0]["loc"] == ["body", 1, "value"]  # type: ignore[index]
    assert answer["detail"][0]["msg"] == "value '-5.0' below the minimum 0"  # type: ignore[index]
    assert post_raw(client, '{"user_id": ')[0] == 422  # unparsable: documented 422, not 400
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**KEY, **({"Content-Type": content_type} if content_type else {})}
        plain = client.post("/interactions", content=b'{"user_id": "u1", "item_id": "i1"}', headers=headers)
        assert plain.status_code == 422, plain.json()
        ((error,),) = [plain.json()["detail"]]
        assert error["type"] == "content_type" and "Content-Type: application/json" in error["msg"], error
    with session_scope(client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(Interaction).where(Interaction.ts > 2000)) == 0


def test_iso_timestamps_event_ids_and_recommendation_ids(client: TestClient) -> None:
    epoch = {"user_id": "u3", "item_id": "i2", "timestamp": 1_700_000_000}
    iso = {"user_id": "u3", "item_id": "i2", "timestamp": "2023-11-15T00:13:20+02:00"}
    assert client.post("/interactions", json=epoch, headers=KEY).json()["stored"] == 1
    assert client.post("/interactions", json=iso, headers=KEY).json()["duplicates"] == 1  # the same instant
    event = {"user_id": "u3", "item_id": "i9", "event_id": "evt-1", "recommendation_id": "rec-42"}
    first = client.post("/interactions", json=event, headers=KEY).json()
    retry = client.post("/interactions", json=event, headers=KEY).json()  # no timestamp: "now" again
    assert (first["stored"], retry["stored"], retry["duplicates"]) == (1, 0, 1)
    with session_scope(client.app.state.engine) as session:  # type: ignore[attr-defined]
        stored = session.execute(
            select(Interaction.event_id, Interaction.recommendation_id).where(Interaction.event_id == "evt-1")
        ).all()
    assert [tuple(row) for row in stored] == [("evt-1", "rec-42")]
    # An event id names one event: reused for another item or value it is refused, not dropped.
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        before = session.scalar(select(func.count()).select_from(Interaction))
    for other in ({**event, "item_id": "i8"}, {**event, "value": 3.0}):
        refused = client.post("/interactions", json=other, headers=KEY)
        assert refused.status_code == 409, refused.json()
        assert "event_id 'evt-1' already names another event" in refused.json()["detail"]
    batch = [{"user_id": "u3", "item_id": item, "event_id": "evt-2"} for item in ("i5", "i6")]
    assert client.post("/interactions", json=batch, headers=KEY).status_code == 409
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Interaction)) == before  # nothing stored


#: Timestamps a JSON body may send, each with its CSV cell: the API stores what a file stores.
TIMES = [
    (1_714_564_800, "1714564800"),
    (1_714_564_800.0, "1714564800.0"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
    ("2024-05-01 12:00:00.250+00:00", "2024-05-01 12:00:00.250+00:00"),
    ("2024-05-01T14:00:00+02:00", "2024-05-01T14:00:00+02:00"),
]


def test_the_api_stores_a_timestamp_as_file_ingestion_does(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    from recsys.ingest import ingest_interactions

    csv = tmp_path / "times.csv"
    csv.write_text(
        "user_id,item_id,rating,timestamp\n"
        + "".join(f"csv{i},i1,1,{cell}\n" for i, (_, cell) in enumerate(TIMES))
    )
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert ingest_interactions(engine, csv).rows_loaded == len(TIMES)
    events = [{"user_id": f"api{i}", "item_id": "i1", "timestamp": sent} for i, (sent, _) in enumerate(TIMES)]
    answer = client.post("/interactions", json=events, headers=KEY)
    assert answer.status_code == 201 and answer.json()["stored"] == len(TIMES), answer.json()
    with session_scope(engine) as session:
        stored = dict(
            session.execute(
                select(User.external_id, Interaction.ts).join(User, User.id == Interaction.user_id)
            ).all()
        )
    assert all(stored[f"api{i}"] == stored[f"csv{i}"] == 1_714_564_800 for i in range(len(TIMES)))


def test_a_timestamp_in_another_form_gets_one_error_naming_the_accepted_forms(client: TestClient) -> None:
    """A JSON body states its types, and the schema states what a timestamp may be (a file's cell
    is untyped text and is read more widely): one error per event, naming both forms."""
    for sent, hint in (
        ("2024-05-01T12:00:00", "has no offset (add Z for UTC)"),
        ("2024-05-01", "got '2024-05-01'"),
        (1_714_564_800.5, "got 1714564800.5"),
        ("1714564800", "got '1714564800'"),
    ):
        answer = client.post(
            "/interactions", json={"user_id": "u1", "item_id": "i1", "timestamp": sent}, headers=KEY
        )
        assert answer.status_code == 422, answer.json()
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", "timestamp"], error
        assert "epoch seconds (a whole number) or an ISO 8601 date-time with a UTC offset" in error["msg"], (
            error
        )
        assert hint in error["msg"], error
    # In a list, the error is located at its event, without the single-event reading's noise.
    batch = [
        {"user_id": "u1", "item_id": "i1"},
        {"user_id": "u1", "item_id": "i2", "timestamp": "2024-05-01"},
    ]
    (error,) = client.post("/interactions", json=batch, headers=KEY).json()["detail"]
    assert error["loc"] == ["body", 1, "timestamp"], error


def test_errors_read_as_ingestion_words_them_and_echo_no_long_body(client: TestClient) -> None:
    blank = client.post("/interactions", json={"user_id": "  ", "item_id": "i1"}, headers=KEY).json()[
        "detail"
    ]
    assert blank == [
        {
            "loc": ["body", "user_id"],
            "msg": "an id must hold something other than white space, and no control characters",
            "type": "string_pattern_mismatch",
            "input": "  ",
        }
    ]
    too_many = client.post("/interactions", json=[{"user_id": "u", "item_id": "i"}] * 5001, headers=KEY)
    assert too_many.status_code == 422 and len(too_many.content) < 1000, too_many.content[:300]


def test_a_changed_value_follows_the_duplicate_policy(client: TestClient, settings: Settings) -> None:
    event = {"user_id": "u4", "item_id": "i1", "value": 2, "timestamp": 50}
    client.post("/interactions", json=event, headers=KEY)
    changed = client.post("/interactions", json={**event, "value": 3}, headers=KEY).json()
    assert (changed["stored"], changed["conflicting"]) == (1, 1)  # update (the default) replaces it
    strict = settings.model_copy(update={"duplicate_policy": "reject"})
    with TestClient(create_app(strict)) as other:
        refused = other.post("/interactions", json={**event, "value": 4}, headers=KEY)
    assert refused.status_code == 409 and "differs from the value 3 stored" in refused.json()["detail"]
    with session_scope(client.app.state.engine) as session:  # type: ignore[attr-defined]
        values = session.scalars(select(Interaction.value).where(Interaction.ts == 50)).all()
    assert values == [3.0]


def test_a_locked_database_gives_503_within_the_request_timeout(settings: Settings, version: object) -> None:
    import threading
    import time

    quick = settings.model_copy(update={"request_timeout_seconds": 0.5})
    with TestClient(create_app(quick)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        held, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with engine.connect() as connection:
                if engine.dialect.name == "postgresql":
                    connection.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                else:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    connection.exec_driver_sql("INSERT INTO locks (name, owner) VALUES ('x', 'y')")
                held.set()
                release.wait(10)
                connection.rollback()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        held.wait(5)
        started = time.perf_counter()
        response = client.post("/interactions", json={"user_id": "u1", "item_id": "i1"}, headers=KEY)
        elapsed = time.perf_counter() - started
        release.set()
        holder.join()
    assert response.status_code == 503 and "unavailable" in response.json()["detail"]
    assert elapsed < 3, elapsed


def test_an_unexpected_error_is_a_json_500_with_a_request_id(settings: Settings, version: object) -> None:
    import service.routers.interactions as interactions_router

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    app = create_app(settings)
    original = interactions_router.store_interactions
    interactions_router.store_interactions = broken  # type: ignore[assignment]
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post(
                "/interactions",
                json={"user_id": "u1", "item_id": "i1"},
                headers={**KEY, "X-Request-ID": "abc"},
            )
    finally:
        interactions_router.store_interactions = original
    assert response.status_code == 500
    assert response.json()["request_id"] == "abc" and "a bug" not in response.text


# --- deletion -------------------------------------------------------------------------------


def test_an_erased_user_is_gone_at_once_and_audited(client: TestClient) -> None:
    assert client.delete("/users/u3").status_code == 401
    assert client.get("/users/u3/recommendations").json()["strategy"] == "personalized"
    response = client.delete("/users/u3", headers=KEY)
    assert response.status_code == 200
    assert response.json() == {"target": "user", "id": "u3", "interactions": len(seen_items(3))}
    assert client.get("/users/u3/recommendations").json()["strategy"] == "popular"
    assert client.delete("/users/u3", headers=KEY).status_code == 404
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        assert session.scalar(select(User.id).where(User.external_id == "u3")) is None
        audit = session.execute(text("SELECT target, external_id, interactions, source FROM deletions")).all()
    assert [tuple(row) for row in audit] == [("user", "u3", len(seen_items(3)), "api")]
    # The next trained version never sees the user.
    from recsys.data.matrix import build_interactions

    assert "u3" not in set(build_interactions(engine).users.external_ids)


def test_erasure_reaches_every_worker_and_survives_a_reload(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second app on the same settings is another worker of the same service.
    with TestClient(create_app(settings)) as other:
        assert other.get("/users/u4/recommendations").json()["strategy"] == "personalized"
        assert client.delete("/users/u4", headers=KEY).status_code == 200
        assert other.get("/users/u4/recommendations").json()["strategy"] == "popular"
        # `recsys delete` erases as the API does, and running workers forget on their next request.
        from typer.testing import CliRunner

        from recsys.cli import app as cli

        assert other.get("/users/u5/recommendations").json()["strategy"] == "personalized"
        from recsys.settings import get_settings

        monkeypatch.setenv("RECSYS_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("RECSYS_DATABASE_URL", settings.database_url)
        get_settings.cache_clear()
        try:
            done = CliRunner().invoke(cli, ["delete", "user", "u5"])
        finally:
            get_settings.cache_clear()
        assert done.exit_code == 0, done.output
        assert other.get("/users/u5/recommendations").json()["strategy"] == "popular"
        assert client.get("/users/u5/recommendations").json()["strategy"] == "popular"
    # A worker started later serves the same (older) version: the erasures still hold.
    with TestClient(create_app(settings)) as restarted:
        for user in ("u4", "u5"):
            assert restarted.get(f"/users/{user}/recommendations").json()["strategy"] == "popular"


def test_an_erased_item_is_never_recommended_and_events_are_deleted_by_id(client: TestClient) -> None:
    top = client.get("/users/nobody/recommendations", params={"k": 1}).json()["items"][0]["item_id"]
    assert client.delete(f"/items/{top}", headers=KEY).json()["target"] == "item"
    for user in ("nobody", "u1", "u2"):
        body = client.get(f"/users/{user}/recommendations", params={"k": N_ITEMS}).json()
        assert top not in [item["item_id"] for item in body["items"]]
    client.post("/interactions", json={"user_id": "u1", "item_id": "i5", "event_id": "e-9"}, headers=KEY)
    assert client.delete("/interactions/e-9", headers=KEY).json() == {
        "target": "interaction",
        "id": "e-9",
        "interactions": 1,
    }
    assert client.delete("/interactions/e-9", headers=KEY).status_code == 404


def test_a_database_data_error_is_422_not_503(settings: Settings, version: object) -> None:
    """Driver data errors (a value out of a column's range, a NUL byte) are the client's."""
    from sqlalchemy.exc import DataError

    import service.routers.interactions as interactions_router

    def refused(*args: object, **kwargs: object) -> None:
        raise DataError("INSERT ...", {}, Exception("value out of range for type bigint"))

    original = interactions_router.store_interactions
    interactions_router.store_interactions = refused  # type: ignore[assignment]
    try:
        with TestClient(create_app(settings)) as client:
            response = client.post("/interactions", json={"user_id": "u1", "item_id": "i1"}, headers=KEY)
    finally:
        interactions_router.store_interactions = original
    assert response.status_code == 422
    assert "value out of range for type bigint" in response.json()["detail"][0]["msg"]
