"""Items in the catalogue without interactions, through the product path: ingested with titles and
genres, `recsys train --model two-tower` gives them vectors from their features, the version's
FAISS index holds them, and `recsys score` and the service recommend them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsys.cli import app
from recsys.db.engine import get_engine
from recsys.registry.registry import LoadedVersion, ModelRegistry
from recsys.retrieval.loading import version_index
from recsys.settings import Settings, get_settings
from service.app import create_app

GENRES = ("Action", "Comedy", "Drama")
ITEMS_PER_GENRE = 15
USERS_PER_GENRE = 30
#: Small and quick; the parameters that decide what an untrained item's vector is (negatives,
#: log-Q, features) keep their defaults.
PARAMS = ("dim=16", "hidden=32", "batch_size=128", "learning_rate=0.01", "epochs=20")
NEW_ITEMS = [f"new-{genre}" for genre in GENRES]

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def write_files(folder: Path) -> tuple[Path, Path]:
    """Users of genre g watch 8 of the 15 items of genre g; the catalogue also has one new item per
    genre that nobody has watched (titles say nothing about the genre)."""
    rng = np.random.default_rng(0)
    rows = []
    for g, genre in enumerate(GENRES):
        for u in range(USERS_PER_GENRE):
            watched = rng.choice(ITEMS_PER_GENRE, size=8, replace=False)
            rows += [(f"u{genre}{u}", f"i{g * ITEMS_PER_GENRE + i}", 4.0, 1_000 + u) for i in watched]
    events = folder / "events.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(events, index=False)
    catalogue = [
        (f"i{g * ITEMS_PER_GENRE + i}", f"Movie {g * ITEMS_PER_GENRE + i}", genre)
        for g, genre in enumerate(GENRES)
        for i in range(ITEMS_PER_GENRE)
    ]
    catalogue += [(f"new-{genre}", f"Premiere {g}", genre) for g, genre in enumerate(GENRES)]
    items = folder / "items.csv"
    pd.DataFrame(catalogue, columns=["item_id", "title", "genres"]).to_csv(items, index=False)
    return events, items


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """The product path once for the module: ingest, `recsys train --model two-tower`. The
    commands of every test read these settings (the cached ones are reset around the module)."""
    folder = tmp_path_factory.mktemp("cold-start")
    settings = Settings(data_dir=folder / "data", database_url=f"sqlite:///{folder / 'recsys.db'}",
                        api_key="key", reload_poll_seconds=0)  # fmt: skip
    url = settings.database_url
    events, items = write_files(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_DATA_DIR", str(settings.data_dir))
        for name in ("RECSYS_DATABASE_URL", "RECSYS_ARTIFACT_DIR", "RECSYS_DEFAULT_MODEL"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        invoke("db", "upgrade", "--database-url", url)
        invoke("ingest", "csv", str(events), "--user-col", "user_id", "--item-col", "item_id",
               "--value-col", "rating", "--timestamp-col", "timestamp", "--database-url", url)  # fmt: skip
        invoke("ingest", "items", str(items), "--database-url", url)
        params = [part for param in PARAMS for part in ("--param", param)]
        printed = invoke("train", "--model", "two-tower", *params, "--database-url", url)
        yield settings, printed.strip().splitlines()[-1]
    get_settings.cache_clear()


def load(settings: Settings, version: str) -> LoadedVersion:
    return ModelRegistry(get_engine(settings.database_url), settings.artifacts).load(version)


def test_new_items_get_vectors_from_their_genres(trained: tuple[Settings, str]) -> None:
    settings, version = trained
    loaded = load(settings, version)
    assert loaded.model.item_factors is not None
    vectors = loaded.model.item_factors[:, :-1]  # the towers' part (the last column is the item bias)
    assert len(vectors) == len(loaded.items) == 3 * ITEMS_PER_GENRE + 3
    new = loaded.items.indices(NEW_ITEMS)
    assert (new >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[new], axis=1), 1.0, atol=1e-5)
    genre_of = np.repeat(np.arange(3), ITEMS_PER_GENRE)
    old = loaded.items.indices([f"i{i}" for i in range(3 * ITEMS_PER_GENRE)])
    for g, item in enumerate(new):
        cosine = vectors[old] @ vectors[item]
        own, others = cosine[genre_of == g].mean(), cosine[genre_of != g].mean()
        assert own > others + 0.3, (GENRES[g], own, others)


def test_new_items_are_in_the_version_index(trained: tuple[Settings, str]) -> None:
    settings, version = trained
    loaded = load(settings, version)
    index = version_index(loaded)
    assert index is not None and index.n_items == len(loaded.items)
    new = loaded.items.indices(NEW_ITEMS)
    assert loaded.model.item_factors is not None
    ids, _ = index.search(loaded.model.item_factors[new], 1)
    np.testing.assert_array_equal(ids[:, 0], new)


def test_recsys_score_ranks_each_users_own_genre_new_item_first(
    trained: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, version = trained
    out = tmp_path / "scores.parquet"
    url = settings.database_url
    invoke("score", "--version", version, "--k", "50", "--out", str(out), "--database-url", url)
    scores = pd.read_parquet(out)
    new = scores[scores["item_id"].isin(NEW_ITEMS)]
    assert new["user_id"].nunique() == 3 * USERS_PER_GENRE  # every user's list holds the new items
    first = new.sort_values("rank").groupby("user_id")["item_id"].first()
    own = first.index.str[1:].str.rstrip("0123456789")  # "uAction12" -> "Action"
    assert (first.to_numpy() == ("new-" + own).to_numpy()).mean() >= 0.9


def test_the_service_recommends_new_items_and_finds_them_similar_to_their_genre(
    trained: tuple[Settings, str],
) -> None:
    settings, _ = trained  # the first version trained is production
    with TestClient(create_app(settings)) as client:
        similar = client.get("/items/new-Comedy/similar", params={"k": 5})
        assert similar.status_code == 200, similar.text
        assert all(item["genres"] == ["Comedy"] for item in similar.json()["items"])
        listed = client.get("/users/uDrama3/recommendations", params={"k": 50})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["strategy"] == "personalized"
        new = [item["item_id"] for item in body["items"] if item["item_id"] in NEW_ITEMS]
        assert new[0] == "new-Drama" and len(new) == 3
