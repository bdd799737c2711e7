"""The matrix builder against a hand-built matrix, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.pool import StaticPool
from typer.testing import CliRunner

from recsys.cli import app
from recsys.cli.data import parse_kinds, parse_timestamp, parse_weights
from recsys.data.interactions import Interactions
from recsys.data.matrix import build_interactions, data_fingerprint, load_matrix, save_matrix, watermark
from recsys.db import get_engine, upgrade
from recsys.db.models import Interaction, Item, User
from recsys.errors import ConfigError

# Users and items are inserted in this order, so their database ids (and matrix indices) follow
# it, not the alphabet: "carol" and item "c" have no events in EVENTS but still get a row/column.
USERS = ["bob", "alice", "carol"]
ITEMS = ["b", "a", "c"]
# (user, item, kind, value, ts), in insertion order.
EVENTS = [
    ("bob", "b", "rating", 4.0, 100),
    ("bob", "b", "rating", 2.0, 200),  # newer: "last" takes 2, "sum" 6, "max" 4
    ("bob", "a", "view", 1.0, 150),
    ("bob", "a", "click", 1.0, 160),
    ("alice", "b", "rating", 5.0, 50),
    ("alice", "a", "view", 3.0, 70),
    ("alice", "a", "click", 1.0, 70),  # same second as the view, stored later: "last" takes it
    ("bob", "c", "view", 3.0, 500),  # after the watermark used below
]


def load(engine: Engine, events: list[tuple[str, str, str, float, int]] = EVENTS) -> None:
    with engine.begin() as connection:
        connection.execute(insert(User), [{"external_id": u, "attributes": {}} for u in USERS])
        connection.execute(insert(Item), [{"external_id": i, "attributes": {}} for i in ITEMS])
        for user, item, kind, value, ts in events:
            # One statement per event on purpose: the insertion order decides the "last" tie.
            connection.execute(
                insert(Interaction).values(
                    user_id=USERS.index(user) + 1,
                    item_id=ITEMS.index(item) + 1,
                    kind=kind,
                    value=value,
                    ts=ts,
                )
            )


def dense(data: Interactions) -> np.ndarray:
    return data.to_csr().toarray()


def test_id_maps_follow_database_order_and_include_ids_without_events(engine: Engine) -> None:
    load(engine)
    data = build_interactions(engine)
    assert data.users.to_list() == USERS
    assert data.items.to_list() == ITEMS
    assert data.shape == (3, 3)
    assert data.to_csr().getnnz(axis=1).tolist() == [3, 2, 0]


@pytest.mark.parametrize(
    ("combine", "expected"),
    [
        ("last", [[2.0, 1.0, 3.0], [5.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        ("sum", [[6.0, 2.0, 3.0], [5.0, 4.0, 0.0], [0.0, 0.0, 0.0]]),
        ("max", [[4.0, 1.0, 3.0], [5.0, 3.0, 0.0], [0.0, 0.0, 0.0]]),
    ],
)
def test_combine_rules_match_hand_built_matrix(
    engine: Engine, combine: str, expected: list[list[float]]
) -> None:
    load(engine)
    data = build_interactions(engine, combine=combine)
    np.testing.assert_array_equal(dense(data), np.array(expected, dtype=np.float32))
    # The combined timestamp is the newest of the pair's events whatever the rule.
    timestamps = sp.csr_matrix((data.timestamps, (data.user_index, data.item_index)), shape=data.shape)
    np.testing.assert_array_equal(timestamps.toarray(), [[200, 160, 500], [50, 70, 0], [0, 0, 0]])


def test_weights_kinds_and_watermark(engine: Engine) -> None:
    load(engine)
    weights = {"view": 0.5, "click": 2.0}
    data = build_interactions(engine, weights=weights, until=400, combine="sum")
    # bob-a: 1*0.5 + 1*2; alice-a: 3*0.5 + 1*2; bob-c is after the watermark.
    np.testing.assert_array_equal(dense(data), [[6.0, 2.5, 0.0], [5.0, 3.5, 0.0], [0.0, 0.0, 0.0]])
    assert watermark(data) == 200

    last = build_interactions(engine, weights=weights, until=400, combine="last")
    np.testing.assert_array_equal(dense(last), [[2.0, 2.0, 0.0], [5.0, 2.0, 0.0], [0.0, 0.0, 0.0]])

    views = build_interactions(engine, kinds=["view"], combine="max")
    np.testing.assert_array_equal(dense(views), [[0.0, 1.0, 3.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    assert views.users.to_list() == USERS  # the id maps never depend on the selection


def test_entries_sorted_by_user_then_item(engine: Engine) -> None:
    load(engine)
    data = build_interactions(engine)
    key = data.user_index.astype(np.int64) * 3 + data.item_index
    assert np.all(np.diff(key) > 0)
    assert data.values.dtype == np.float32 and data.timestamps.dtype == np.int64


def test_small_chunks_give_the_same_result(engine: Engine) -> None:
    load(engine)
    whole = build_interactions(engine)
    chunked = build_interactions(engine, chunk_size=2)
    np.testing.assert_array_equal(dense(whole), dense(chunked))
    assert data_fingerprint(whole) == data_fingerprint(chunked)


def test_arrow_read_equals_the_driver_cursor_read(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ADBC read of PostgreSQL gives what the DBAPI cursor gives, bit for bit, with every filter
    in the query: weights that are not exact decimals, a kind selection (one with a quote) and a
    watermark."""
    from recsys.data import matrix

    engine = get_engine(postgres_url)
    upgrade(engine)
    load(engine, [*EVENTS, ("carol", "c", "it's", 0.7, 300), ("carol", "a", "view", 1.1, 10)])
    weights = {"view": 1 / 3, "it's": 0.1, "click": 2.5e-7}
    query = matrix._event_query(["view", "it's", "click"], weights, 400)
    ids = select(User.id, User.external_id).order_by(User.id)
    queries = [(query, matrix._EVENT_DTYPE), (ids, matrix._ID_DTYPE)]
    with engine.connect() as connection:
        expected = [
            matrix._concat(matrix._fetch_rows(connection, q, dtype, 2), dtype) for q, dtype in queries
        ]
        monkeypatch.setattr(matrix, "_fetch_rows", None)  # PostgreSQL is never read by the cursor
        read = matrix._read(connection, queries, 2)
    assert len(read[0]["id"]) == 6 and read[1]["external_id"].tolist() == USERS
    for got, want in zip(read, expected, strict=True):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], strict=True)
    assert read[0]["value"].tobytes() == expected[0]["value"].tobytes()


def test_sqlite_is_read_through_its_own_connection(sqlite_engine: Engine) -> None:
    """SQLite, in memory or in a file, is read through the engine's connection: no second copy of
    SQLite in the process (its closing would drop the POSIX locks of the engine's connections)."""
    from recsys.data.matrix import _arrow_connection

    memory = create_engine("sqlite://", poolclass=StaticPool)
    upgrade(memory)
    load(memory)
    load(sqlite_engine)
    for combine in ("last", "sum"):
        in_memory = build_interactions(memory, weights={"view": 0.5}, until=400, combine=combine)
        on_file = build_interactions(sqlite_engine, weights={"view": 0.5}, until=400, combine=combine)
        assert data_fingerprint(in_memory) == data_fingerprint(on_file)
    with sqlite_engine.connect() as connection:
        assert _arrow_connection(connection) is None


def test_empty_database(engine: Engine) -> None:
    data = build_interactions(engine)
    assert data.shape == (0, 0) and len(data) == 0
    assert watermark(data) is None


def test_bad_kind_and_rule_name_the_valid_values(engine: Engine) -> None:
    load(engine)
    with pytest.raises(ConfigError, match=r"'ratings'.*'click', 'rating', 'view'"):
        build_interactions(engine, kinds=["ratings"])
    with pytest.raises(ConfigError, match=r"'like'.*'click', 'rating', 'view'"):
        build_interactions(engine, weights={"like": 2.0})
    with pytest.raises(ConfigError, match="last, sum, max"):
        build_interactions(engine, combine="mean")


def test_fingerprint_is_stable_and_sensitive(sqlite_engine: Engine) -> None:
    load(sqlite_engine)
    data = build_interactions(sqlite_engine)
    fingerprint = data_fingerprint(data)
    assert len(fingerprint) == 64
    assert data_fingerprint(build_interactions(sqlite_engine)) == fingerprint
    # Order of the entries does not matter, a changed value does.
    reversed_order = data.subset(np.arange(len(data))[::-1])
    assert data_fingerprint(reversed_order) == fingerprint
    changed = Interactions(
        data.users, data.items, data.user_index, data.item_index, data.values + 1, data.timestamps
    )
    assert data_fingerprint(changed) != fingerprint
    assert data_fingerprint(build_interactions(sqlite_engine, until=400)) != fingerprint


def test_save_and_load_round_trip(sqlite_engine: Engine, tmp_path: Path) -> None:
    load(sqlite_engine)
    data = build_interactions(sqlite_engine)
    paths = save_matrix(data, tmp_path / "out" / "m.npz")
    assert [p.name for p in paths] == ["m.npz", "m.users.txt", "m.items.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.items.txt", "m.npz", "m.users.txt"]
    matrix, users, items = load_matrix(tmp_path / "out" / "m.npz")
    np.testing.assert_array_equal(matrix.toarray(), dense(data))
    assert users.to_list() == USERS and items.to_list() == ITEMS
    with pytest.raises(ConfigError, match=r"must end in \.npz"):
        save_matrix(data, tmp_path / "m.csv")


def test_export_matrix_command(engine: Engine, database_url: str, tmp_path: Path) -> None:
    load(engine)
    out = tmp_path / "matrix.npz"
    result = CliRunner().invoke(
        app,
        [
            "export-matrix",
            "--out",
            str(out),
            "--database-url",
            database_url,
            "--kinds",
            "view,click",
            "--weight",
            "view=0.5",
            "--weight",
            "click=2",
            "--until",
            "400",
            "--combine",
            "sum",
        ],
    )
    assert result.exit_code == 0, result.output
    matrix, users, _ = load_matrix(out)
    np.testing.assert_array_equal(matrix.toarray(), [[0.0, 2.5, 0.0], [0.0, 3.5, 0.0], [0.0, 0.0, 0.0]])
    assert users.to_list() == USERS
    assert "interactions" in result.output

    bad = CliRunner().invoke(
        app, ["export-matrix", "--out", str(out), "--database-url", database_url, "--weight", "view"]
    )
    assert bad.exit_code != 0
    assert "kind=weight" in str(bad.exception) + bad.output


def test_cli_option_parsing() -> None:
    assert parse_weights(["view=0.5", " click = 2"]) == {"view": 0.5, "click": 2.0}
    with pytest.raises(ConfigError, match="kind=weight"):
        parse_weights(["view:0.5"])
    assert parse_kinds(["rating,view", "click"]) == ["rating", "view", "click"]
    assert parse_kinds(None) is None
    assert parse_timestamp("86400") == 86_400
    assert parse_timestamp("1970-01-02") == 86_400  # UTC when no offset is given
    assert parse_timestamp("1970-01-02T01:00:00+01:00") == 86_400
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_timestamp("yesterday")


# --- recipes: how a model's training matrix comes out of the log ---------------------------------


def test_recipe_selects_weights_and_combines_in_the_database(engine: Engine) -> None:
    from recsys.data.matrix import recipe_interactions
    from recsys.data.recipe import Recipe

    load(engine)
    recipe = Recipe(kinds=("view", "click"), weights={"view": 0.5}, combine="sum")
    data = recipe_interactions(engine, recipe, until=400)
    # bob/a: view 1 x 0.5 + click 1; alice/a: view 3 x 0.5 + click 1; ratings are not selected.
    np.testing.assert_allclose(dense(data), [[0.0, 1.5, 0.0], [0.0, 2.5, 0.0], [0.0, 0.0, 0.0]])


def test_recipe_value_rules() -> None:
    from recsys.data.recipe import Recipe

    data = Interactions.from_arrays(
        ["u", "u", "u", "v"], ["a", "b", "c", "a"], [5.0, 2.0, -1.0, 3.5], [1, 2, 3, 4]
    )
    assert Recipe().apply(data).values.tolist() == [5.0, 2.0, -1.0, 3.5]  # raw keeps the values
    binary = Recipe(values="binary").apply(data)
    assert binary.values.tolist() == [1.0, 1.0, 1.0]  # the negative value is dropped
    assert binary.timestamps.tolist() == [1, 2, 4]
    liked = Recipe(values="threshold", threshold=3.5).apply(data)
    assert sorted(zip(liked.user_index.tolist(), liked.item_index.tolist(), strict=True)) == [(0, 0), (1, 0)]
    # The matrix form (a history row at serving time) reads values exactly as training does.
    matrix = Recipe(values="threshold", threshold=3.5).apply_matrix(data.to_csr())
    np.testing.assert_array_equal(matrix.toarray(), liked.to_csr().toarray())


def test_recipe_overrides_and_bad_recipes() -> None:
    from pydantic import ValidationError

    from recsys.data.recipe import Recipe

    base = Recipe(values="binary", weights={"view": 0.5})
    changed = base.override(kinds=["view", "buy"], weights={"buy": 5.0}, combine="max")
    assert changed == Recipe(
        values="binary", kinds=("view", "buy"), weights={"view": 0.5, "buy": 5.0}, combine="max"
    )
    assert base.override() is base
    assert changed.describe() == "kinds=view,buy, weights=buy:5,view:0.5, combine=max, values=binary"
    with pytest.raises(ConfigError, match="unknown combine rule 'mean'"):
        base.override(combine="mean")
    with pytest.raises(ValidationError, match="threshold is set exactly when"):
        Recipe(values="threshold")
    with pytest.raises(ValidationError, match="finite"):
        Recipe(weights={"view": float("inf")})


def test_recipe_overrides_that_break_a_rule_are_config_errors() -> None:
    from recsys.data.recipe import Recipe

    with pytest.raises(ConfigError, match="invalid recipe: kind weights must be finite"):
        Recipe().override(weights={"view": float("nan")})
    with pytest.raises(ConfigError, match="invalid recipe: kinds is empty"):
        Recipe().override(kinds=[])
