"""A version's seen-items snapshot (``seen/``): written by the trainer, memory-mapped by the service,
which then answers as the database path did (trained users, users with feedback stored after the
snapshot, new users, erased users and items); versions without one still load from the database;
a damaged snapshot fails verification, naming the file."""

from __future__ import annotations

import logging
import mmap
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from recsys.data.matrix import build_interactions
from recsys.db.engine import session_scope
from recsys.db.erasure import erase
from recsys.db.models import Interaction, Item, User
from recsys.errors import ArtifactError
from recsys.registry.artifacts import CHECKSUMS_FILE
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.retrieval import align_to_model
from recsys.retrieval.snapshot import SEEN_DIR, load_snapshot
from recsys.settings import Settings
from recsys.training.trainer import train
from service.app import create_app
from service.state import max_interaction_id

API_KEY = "snapshot-key"
KEY = {"X-API-Key": API_KEY}
N_USERS, N_ITEMS = 120, 40
NOW = 1_700_000_000  # the log's times are before this; the API stamps feedback with the clock


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, api_key=API_KEY, reload_poll_seconds=0
    )


@pytest.fixture
def engine_with_log(engine: Engine) -> Engine:
    """120 users with 6-14 items each out of 40 (clustered, so that the model has structure)."""
    rng = np.random.default_rng(5)
    rows = []
    for user in range(N_USERS):
        cluster = user % 4
        picks = rng.choice(10, size=rng.integers(6, 11), replace=False) + cluster * 10
        extra = rng.choice(N_ITEMS, size=rng.integers(0, 4), replace=False)
        for t, item in enumerate(dict.fromkeys([*picks.tolist(), *extra.tolist()])):
            rows.append(
                {
                    "user_id": user + 1,
                    "item_id": item + 1,
                    "kind": "click",
                    "value": 1.0,
                    "ts": NOW - 10_000 + t,
                }
            )
    with session_scope(engine) as session:
        session.execute(insert(User), [{"external_id": f"u{u}", "attributes": {}} for u in range(N_USERS)])
        session.execute(insert(Item), [{"external_id": f"i{i}", "attributes": {}} for i in range(N_ITEMS)])
        session.execute(insert(Interaction), rows)
    return engine


@pytest.fixture
def trained(engine_with_log: Engine, settings: Settings) -> VersionInfo:
    """An iALS version from the trainer (registered with its snapshot, indexed, production)."""
    return train(engine_with_log, settings, "ials", {"factors": 8, "epochs": 3, "min_epochs": 1, "seed": 1})


def lists(client: TestClient, users: list[str]) -> dict[str, tuple[str, list[str]]]:
    found = {}
    for user in users:
        response = client.get(f"/users/{quote(user, safe='')}/recommendations", params={"k": 8})
        assert response.status_code == 200, response.text
        body = response.json()
        found[user] = (body["strategy"], [entry["item_id"] for entry in body["items"]])
    return found


def mapped(array: object) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (shared between processes), not a copy."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def drop_snapshot(version_dir: Path) -> None:
    """The version as one registered before snapshots existed: no seen/, not in the checksums."""
    shutil.rmtree(version_dir / SEEN_DIR)
    checksums = version_dir / CHECKSUMS_FILE
    kept = [line for line in checksums.read_text().splitlines() if f"  {SEEN_DIR}/" not in line]
    checksums.write_text("".join(f"{line}\n" for line in kept))


@pytest.fixture
def served(settings: Settings, trained: VersionInfo) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_trainer_registers_the_snapshot_of_the_log(
    engine_with_log: Engine, settings: Settings, trained: VersionInfo
) -> None:
    registry = ModelRegistry(engine_with_log, settings.artifacts)
    loaded = registry.load(trained.version)
    listed = (loaded.path / CHECKSUMS_FILE).read_text()
    for name in ("indptr.npy", "indices.npy", "data.npy", "fold.npy", "extra_users.npy", "snapshot.json"):
        assert f"  {SEEN_DIR}/{name}\n" in listed
    snapshot = load_snapshot(loaded.path, loaded.users, loaded.items)
    assert all(mapped(array) for array in (snapshot.seen.indptr, snapshot.seen.indices, snapshot.seen.data))
    _, expected = align_to_model(build_interactions(engine_with_log), loaded.users, loaded.items)
    assert (snapshot.seen != expected).nnz == 0 and snapshot.seen.shape == expected.shape
    assert snapshot.marks.interaction_id == max_interaction_id(engine_with_log)
    assert not snapshot.fold.any()  # nothing is newer than the watermark yet


def test_the_snapshot_answers_as_the_database_did(
    engine_with_log: Engine, settings: Settings, trained: VersionInfo, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_with_log
    # While no service runs: feedback of two trained users and of a new one, an erased user who
    # had posted feedback too, and an erased item.
    with TestClient(create_app(settings)) as client:
        # ... and 15 users taking up i5: the popular list counts it after a restart too.
        takers = [(f"u{user}", "i5") for user in range(61, 81) if user % 4][:15]
        for user, item in (
            ("u3", "i35"),
            ("u3", "i36"),
            ("u50", "i1"),
            ("newcomer", "i12"),
            ("u7", "i2"),
            *takers,
        ):
            posted = client.post("/interactions", json={"user_id": user, "item_id": item}, headers=KEY)
            assert posted.status_code == 201, posted.text
    assert erase(engine, "user", "u7", source="cli").found
    assert erase(engine, "item", "i13", source="cli").found
    users = ["u0", "u1", "u2", "u3", "u50", "newcomer", "u7", "u9", "u10", "u11", "nobody"]

    with TestClient(create_app(settings)) as client:
        from_snapshot = lists(client, users)
        # Feedback while it runs: the live answer is the one a restart gives.
        assert (
            client.post("/interactions", json={"user_id": "u1", "item_id": "i30"}, headers=KEY).status_code
            == 201
        )
        live = lists(client, ["u1"])
    assert from_snapshot["u3"][0] == from_snapshot["newcomer"][0] == "folded-in"
    assert from_snapshot["u0"][0] == "personalized" and from_snapshot["u7"][0] == "popular"
    assert all("i13" not in items for _, items in from_snapshot.values())
    assert from_snapshot["nobody"][1][0] == "i5"
    with TestClient(create_app(settings)) as client:
        restarted = lists(client, users)
    assert restarted["u1"] == live["u1"]

    version_dir = ModelRegistry(engine, settings.artifacts).get(trained.version).path
    drop_snapshot(version_dir)
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        from_database = lists(client, users)
    assert "has no seen-items snapshot" in caplog.text
    assert from_database == restarted
    assert {user: from_snapshot[user] for user in users if user != "u1"} == {
        user: from_database[user] for user in users if user != "u1"
    }


def test_a_removed_interaction_sends_the_load_back_to_the_database(
    engine_with_log: Engine, settings: Settings, trained: VersionInfo, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings)) as client:
        event = {"user_id": "u4", "item_id": "i33", "event_id": "e-1"}
        assert client.post("/interactions", json=event, headers=KEY).status_code == 201
    # The event is gone, and so is one the snapshot holds (the deletions table keeps no pairs).
    with session_scope(engine_with_log) as session:
        first = session.scalar(select(Interaction.id).order_by(Interaction.id).limit(1))
        session.execute(Interaction.__table__.update().where(Interaction.id == first).values(event_id="old"))
    assert erase(engine_with_log, "interaction", "old", source="cli").found
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        from_log = lists(client, ["u0", "u4"])
    assert "removal(s) of single interactions since its seen-items snapshot" in caplog.text
    drop_snapshot(ModelRegistry(engine_with_log, settings.artifacts).get(trained.version).path)
    with TestClient(create_app(settings)) as client:
        assert lists(client, ["u0", "u4"]) == from_log


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda seen: (seen / "indices.npy").write_bytes(b"\x93NUMPY broken"), "indices.npy does not match"),
        (lambda seen: (seen / "data.npy").unlink(), "data.npy is missing"),
    ],
)
def test_a_damaged_snapshot_fails_verification_naming_the_file(
    engine_with_log: Engine, settings: Settings, trained: VersionInfo, damage: object, message: str
) -> None:
    registry = ModelRegistry(engine_with_log, settings.artifacts)
    seen = registry.get(trained.version).path / SEEN_DIR
    damage(seen)  # type: ignore[operator]
    with pytest.raises(ArtifactError, match=message):
        registry.verify(trained.version)
    with TestClient(create_app(settings)) as client:  # the service is not ready and says why
        response = client.get("/ready")
    assert response.status_code == 503 and message in response.json()["detail"]


def test_a_snapshot_that_does_not_fit_the_version_is_refused(
    engine_with_log: Engine, settings: Settings, trained: VersionInfo
) -> None:
    loaded = ModelRegistry(engine_with_log, settings.artifacts).load(trained.version)
    fewer = type(loaded.users)(loaded.users.external_ids[:-1])
    with pytest.raises(ArtifactError, match=r"seen/indptr\.npy holds \d+ entries"):
        load_snapshot(loaded.path, fewer, loaded.items)


def test_a_version_trained_on_part_of_the_log_gets_the_snapshot_of_all_of_it(
    engine_with_log: Engine, settings: Settings
) -> None:
    """Trained up to a time, the version's snapshot still holds every stored interaction (the
    service excludes them all), and folds in the users with interactions after the watermark."""
    info = train(
        engine_with_log,
        settings,
        "ials",
        {"factors": 8, "epochs": 2, "min_epochs": 1},
        until=NOW - 10_000 + 5,
    )
    loaded = ModelRegistry(engine_with_log, settings.artifacts).load(info.version)
    snapshot = load_snapshot(loaded.path, loaded.users, loaded.items)
    data = build_interactions(engine_with_log)
    _, expected = align_to_model(data, loaded.users, loaded.items)
    assert (snapshot.seen != expected).nnz == 0
    newest = np.zeros(len(loaded.users), dtype=np.int64)
    np.maximum.at(newest, data.user_index, data.timestamps)
    assert np.array_equal(snapshot.fold, newest > NOW - 10_000 + 5) and snapshot.fold.any()
