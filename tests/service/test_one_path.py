"""The service, `recsys score` and `recsys evaluate` rank through one retriever: the same lists for
the same users (trained, folded-in after feedback or after the watermark, new to the version,
without history), with and without filters, for iALS and the default model (the iALS +
autoencoder blend); a posted history gets the list of the user it belongs to; a loaded version's
first fold-in computes nothing a later one reuses; and the folded-in vector cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from recsys.cli.evaluate import ranking_inputs
from recsys.data.catalog import item_catalog
from recsys.data.interactions import IdMap
from recsys.data.matrix import build_interactions
from recsys.db.engine import session_scope
from recsys.db.models import Interaction, User
from recsys.evaluation.ranking import recommend_top_k
from recsys.index import build_for_version
from recsys.models.base import Recommender
from recsys.models.ensemble import IALSLowRank
from recsys.models.ials import ImplicitALS
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.retrieval import Catalogue, RankOptions
from recsys.settings import Settings
from service.app import create_app
from tests.service.conftest import API_KEY, N_ITEMS, item_genres

KEY = {"X-API-Key": API_KEY}
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINED_USERS = 25  # u0 .. u24; u25 .. u29 and the users added below are new to the version
WATERMARK = 1020  # u21 .. u24 have interactions newer than this (timestamps are 1000 + u)
SLASH_USER = "shop/eu/42"
FILTERS = {"include_genres": ["Drama", "Action"], "exclude_genres": ["Comedy"]}


def random_model(name: str) -> Recommender:
    """Fixed random vectors, folded in by exact numpy solves: iALS (8 factors), or the default
    model, the iALS + low-rank autoencoder blend (8 + 8 columns, its part scales computed)."""
    rng = np.random.default_rng(11)
    ials = ImplicitALS(factors=8)
    ials.item_factors = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    ials.user_factors = rng.normal(size=(TRAINED_USERS, 8)).astype(np.float32)
    if name == ials.name:
        return ials
    blend = IALSLowRank(factors=8, rank=8)
    assert name == blend.name
    blend.ials.item_factors, blend.ials.user_factors = ials.item_factors, ials.user_factors
    blend.lowrank.encoder = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    blend.lowrank.item_factors = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    blend.lowrank.user_factors = rng.normal(size=(TRAINED_USERS, 8)).astype(np.float32)
    blend._combine()
    return blend


def register_version(registry: ModelRegistry, settings: Settings, model: Recommender) -> VersionInfo:
    """A version of ``model``, promoted, with two more database users: one new with history (an id
    holding '/'), one with none."""
    engine = registry.engine
    with session_scope(engine) as session:
        session.execute(
            insert(User), [{"external_id": SLASH_USER, "attributes": {}}, {"external_id": "lurker"}]
        )
        slash_id = session.query(User.id).filter(User.external_id == SLASH_USER).scalar()
        session.execute(
            insert(Interaction),
            [
                {"user_id": slash_id, "item_id": i + 1, "kind": "rating", "value": v, "ts": 900}
                for i, v in ((2, 5.0), (9, 1.0), (13, 3.0))
            ],
        )
    users = IdMap(np.array([f"u{u}" for u in range(TRAINED_USERS)], dtype=object))
    items = IdMap(np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object))
    info = registry.register(model, users, items, metrics={}, watermark=WATERMARK, data_fingerprint="test")
    build_for_version(registry, info.version, settings)
    registry.promote(info.version, force=True)
    return info


@pytest.fixture
def ials_version(registry: ModelRegistry, settings: Settings) -> VersionInfo:
    return register_version(registry, settings, random_model("ials"))


@pytest.fixture
def ials_client(settings: Settings, ials_version: VersionInfo) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(params=["ials", "ials-lowrank"])
def vector_version(
    request: pytest.FixtureRequest, registry: ModelRegistry, settings: Settings
) -> VersionInfo:
    """A version of iALS or of the default model (the blend), each parameter its own run."""
    return register_version(registry, settings, random_model(request.param))


@pytest.fixture
def vector_client(settings: Settings, vector_version: VersionInfo) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def service_lists(client: TestClient, users: list[str], params: dict[str, object]) -> dict[str, list[str]]:
    lists = {}
    for user in users:
        response = client.get(f"/users/{quote(user, safe='')}/recommendations", params=params)
        assert response.status_code == 200, (user, response.text)
        lists[user] = [item["item_id"] for item in response.json()["items"]]
    return lists


def score_lists(settings: Settings, out: Path, k: int, filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """`recsys score` as a user runs it (a separate process, the production version)."""
    options = [f"--include-genre={g}" for g in filters.get("include_genres", [])]
    options += [f"--exclude-genre={g}" for g in filters.get("exclude_genres", [])]
    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": settings.database_url,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [sys.executable, "-m", "recsys", "score", f"--k={k}", f"--out={out}", "--json", *options]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    frame = pd.read_parquet(out).sort_values(["user_id", "rank"])
    return {user: group["item_id"].tolist() for user, group in frame.groupby("user_id")}


def evaluate_lists(
    engine: Engine, registry: ModelRegistry, version: str, k: int, filters: dict[str, list[str]]
) -> dict[str, list[str]]:
    """What `recsys evaluate` ranks, with the whole log as the train part."""
    loaded = registry.load(version)
    data = build_interactions(engine)
    catalogue = Catalogue.from_frame(len(loaded.items), item_catalog(engine, loaded.items))
    retriever, train, fold = ranking_inputs(loaded, data, catalogue)
    rows = loaded.users.to_list() + [user for user in data.users.to_list() if user not in loaded.users]
    options = RankOptions(
        k=k,
        include_genres=filters.get("include_genres", ()),
        exclude_genres=filters.get("exclude_genres", ()),
    )
    top = recommend_top_k(retriever, train, np.arange(len(rows)), k, options=options, fold=fold)
    names = loaded.items.external_ids
    return {
        user: [str(names[i]) for i in row if i >= 0] for user, row in zip(rows, top.tolist(), strict=True)
    }


def posted_lists(client: TestClient, users: list[str], params: dict[str, object]) -> dict[str, list[str]]:
    """POST /recommendations with each user's history as the service holds it (snapshot and
    feedback merged): the single-history fold-in, where GET folds the user in as a block row."""
    retriever = client.app.state.holder.current.retriever  # type: ignore[attr-defined]
    names = retriever.items.external_ids
    lists = {}
    for user in users:
        columns, values, _ = retriever.user_history(user)
        body = {"items": [str(names[c]) for c in columns], "values": values.tolist(), **params}
        response = client.post("/recommendations", json=body)
        assert response.status_code == 200, (user, response.text)
        lists[user] = [item["item_id"] for item in response.json()["items"]]
    return lists


def test_service_score_and_evaluate_give_the_same_lists(
    vector_client: TestClient,
    vector_version: VersionInfo,
    settings: Settings,
    registry: ModelRegistry,
    tmp_path: Path,
) -> None:
    client = vector_client
    # u3 (trained) re-rates an item it has: from now on it is folded in, by every path.
    event = {"user_id": "u3", "item_id": "i3", "value": 5.0}
    response = client.post("/interactions", json=event, headers=KEY)
    assert response.status_code == 201
    users = [f"u{u}" for u in range(30)] + [SLASH_USER, "lurker"]
    strategies = {
        user: client.get(f"/users/{quote(user, safe='')}/recommendations").json()["strategy"]
        for user in ("u0", "u3", "u22", "u27", SLASH_USER, "lurker")
    }
    assert strategies == {
        "u0": "personalized", "u3": "folded-in", "u22": "folded-in",
        "u27": "folded-in", SLASH_USER: "folded-in", "lurker": "popular",
    }  # fmt: skip
    # Folded in: u3 (feedback), u21-u24 (after the watermark), u25-u29 and SLASH_USER (new);
    # histories of 3 to 5 items, so iALS solves both ways (up to half its 8 factors, and above).
    folded = ["u3", *(f"u{u}" for u in range(21, 30)), SLASH_USER]
    for filters in ({}, FILTERS):
        served = service_lists(client, users, {"k": 6, **filters})
        scored = score_lists(settings, tmp_path / f"scores-{len(filters)}.parquet", 6, filters)
        evaluated = evaluate_lists(registry.engine, registry, vector_version.version, 6, filters)
        assert all(len(served[user]) > 0 for user in users)
        assert scored == {user: served[user] for user in users}
        assert {user: evaluated[user] for user in users} == served
        assert posted_lists(client, folded, {"k": 6, **filters}) == {user: served[user] for user in folded}
    # The filters held: every filtered item has Drama or Action and no Comedy.
    for items in served.values():
        genres = [item_genres(int(item[1:])) for item in items]
        assert all({"Drama", "Action"} & set(g) and "Comedy" not in g for g in genres)


def test_a_loaded_version_computes_nothing_on_its_first_fold_in(
    vector_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the version prepared the single-history fold-in (iALS's Gram matrix and its
    eigendecomposition), so the first POST /recommendations computes neither."""
    model = vector_client.app.state.holder.current.retriever.model  # type: ignore[attr-defined]
    ials = model.ials if isinstance(model, IALSLowRank) else model
    assert isinstance(ials, ImplicitALS)
    assert ials._fixed_cache[0] is ials.item_factors and ials._eigen_cache[0] is ials.item_factors
    prepared = (ials._fixed_cache, ials._eigen_cache)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("an eigendecomposition computed by a request")

    monkeypatch.setattr(np.linalg, "eigh", refused)
    for items in (["i1", "i2"], ["i1", "i2", "i4", "i5", "i7", "i8"]):  # both iALS solves
        response = vector_client.post("/recommendations", json={"items": items, "k": 5})
        assert response.status_code == 200 and len(response.json()["items"]) == 5
    assert ials._fixed_cache is prepared[0] and ials._eigen_cache is prepared[1]  # not recomputed


def test_folded_in_vector_is_cached_until_that_user_acts_again(ials_client: TestClient) -> None:
    state = ials_client.app.state.holder.current  # type: ignore[attr-defined]
    retriever = state.retriever
    model = retriever.model
    calls: list[int] = []
    original = model.fold_in
    model.fold_in = lambda rows: calls.append(rows.shape[0]) or original(rows)  # type: ignore[method-assign]

    def get(user: str) -> list[str]:
        body = ials_client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
        assert body["strategy"] == "folded-in"
        return [item["item_id"] for item in body["items"]]

    def post(user: str, item: str, value: float) -> None:
        event = {"user_id": user, "item_id": item, "value": value}
        assert ials_client.post("/interactions", json=event, headers=KEY).status_code == 201

    post("u3", "i12", 2.0)
    first = get("u3")
    assert calls == [1] and "u3" in retriever.cache
    assert get("u3") == first and calls == [1]  # the cached vector answered
    post("u7", "i15", 1.0)  # another user's feedback leaves u3's vector valid
    assert get("u3") == first and calls == [1]
    get("u7")
    assert calls == [1, 1]
    post("u3", "i19", 5.0)  # u3's own feedback invalidates it
    after = get("u3")
    assert calls == [1, 1, 1] and "i19" not in after
    assert get("u3") == after and calls == [1, 1, 1]
    assert retriever.cache.hits >= 3


def test_history_values_the_model_cannot_use_are_a_422(ials_client: TestClient, settings: Settings) -> None:
    body = {"items": ["i1", "i2"], "values": [1.0, -2.0]}
    negative = ials_client.post("/recommendations", json=body)  # the input rules refuse it first
    assert negative.status_code == 422 and "below the minimum 0" in str(negative.json()["detail"])
    assert ials_client.post("/recommendations", json={"items": ["i1"], "values": [2.0]}).status_code == 200
    # Rules that allow negative values (for an explicit model) still meet implicit ALS's refusal.
    allowing = settings.model_copy(update={"interaction_value_min": -5.0})
    with TestClient(create_app(allowing)) as client:
        refused = client.post("/recommendations", json=body)
        assert refused.status_code == 422 and "non-negative" in str(refused.json()["detail"])


def test_feedback_the_model_cannot_fold_in_does_not_break_answers(
    ials_client: TestClient, settings: Settings
) -> None:
    # By default the input rules refuse negative values at the door.
    event = {"user_id": "u2", "item_id": "i1", "value": -1.0}
    assert ials_client.post("/interactions", json=event, headers=KEY).status_code == 422
    # An operator who allows them (for an explicit model) still serves the implicit ALS version:
    # the trained user keeps the trained vector, a new user gets popular items, and everyone else
    # is still answered (no 500).
    allowing = settings.model_copy(update={"interaction_value_min": -5.0})
    with TestClient(create_app(allowing)) as client:
        for user in ("u2", "brand-new"):
            event = {"user_id": user, "item_id": "i1", "value": -1.0}
            assert client.post("/interactions", json=event, headers=KEY).status_code == 201
        assert client.get("/users/u2/recommendations").json()["strategy"] == "personalized"
        assert client.get("/users/brand-new/recommendations").json()["strategy"] == "popular"
        assert client.get("/users/u3/recommendations").json()["strategy"] == "personalized"
