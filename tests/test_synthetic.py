"""The synthetic generator: sizes, determinism, shape of the data, planted structure, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.sparse.linalg import svds
from typer.testing import CliRunner

from recsys.cli import app
from recsys.cli.data import INGEST_COMMAND
from recsys.data import synthetic
from recsys.data.interactions import Interactions
from recsys.data.matrix import build_interactions
from recsys.data.splits import protocol_k_split
from recsys.data.synthetic import SyntheticShape, generate_synthetic, synthetic_items, write_synthetic
from recsys.db import get_engine
from recsys.errors import ConfigError
from recsys.evaluation.metrics import ranking_metrics

N_USERS, N_ITEMS, N_INTERACTIONS = 1000, 500, 40_000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic(N_USERS, N_ITEMS, N_INTERACTIONS, seed=42, rank=8)


def test_exact_sizes_ids_and_ranges(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert len(frame) == N_INTERACTIONS
    assert not frame.duplicated(["user_id", "item_id"]).any()
    user_numbers = frame["user_id"].str.removeprefix("u").astype(int)
    item_numbers = frame["item_id"].str.removeprefix("i").astype(int)
    assert frame["user_id"].str.startswith("u").all() and frame["item_id"].str.startswith("i").all()
    # Every user appears (at least 5 interactions each); item ids stay in range.
    assert sorted(user_numbers.unique()) == list(range(N_USERS))
    assert item_numbers.between(0, N_ITEMS - 1).all()
    assert frame.groupby("user_id").size().min() >= SyntheticShape().min_user_interactions
    assert set(frame["rating"].unique()) == {1, 2, 3, 4, 5}
    shape = SyntheticShape()
    assert frame["timestamp"].between(shape.start_timestamp, shape.start_timestamp + shape.span_seconds).all()
    # Sorted by user, then time.
    assert (np.diff(user_numbers.to_numpy()) >= 0).all()


def test_popularity_and_activity_are_skewed(frame: pd.DataFrame) -> None:
    item_counts = frame["item_id"].value_counts()
    top_decile = item_counts.iloc[: N_ITEMS // 10].sum() / N_INTERACTIONS
    assert top_decile > 0.3  # uniform popularity would give 0.1
    user_counts = frame.groupby("user_id").size()
    assert user_counts.max() > 5 * user_counts.median()  # heavy-tailed activity


def test_ratings_follow_the_planted_structure(frame: pd.DataFrame) -> None:
    # Ratings depend on the same factors as the choices: a user's mean rating and an item's
    # mean rating predict a rating better than the global mean.
    global_error = ((frame["rating"] - frame["rating"].mean()) ** 2).mean()
    item_mean = frame.groupby("item_id")["rating"].transform("mean")
    user_mean = frame.groupby("user_id")["rating"].transform("mean")
    assert ((frame["rating"] - item_mean) ** 2).mean() < 0.9 * global_error
    assert ((frame["rating"] - user_mean) ** 2).mean() < 0.9 * global_error
    assert 3.2 < frame["rating"].mean() < 3.9


def test_planted_structure_beats_popularity(frame: pd.DataFrame) -> None:
    data = Interactions.from_arrays(frame["user_id"], frame["item_id"], frame["rating"], frame["timestamp"])
    train, test = protocol_k_split(data)
    seen = train.to_csr()
    seen.data[:] = 1.0
    held_out = test.to_csr()
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)

    def ndcg(scores: np.ndarray) -> float:
        scores = scores.copy()
        scores[seen[users].nonzero()] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        return ranking_metrics(top, held_out[users])["ndcg"]

    u, s, vt = svds(seen.astype(np.float64), k=8)
    svd = ndcg(((u * s) @ vt)[users])
    popularity = ndcg(np.tile(np.asarray(seen.sum(axis=0)).ravel(), (len(users), 1)))
    assert svd > 1.3 * popularity, (svd, popularity)


def test_deterministic_for_a_seed() -> None:
    first = generate_synthetic(300, 200, 5000, seed=0)
    pd.testing.assert_frame_equal(first, generate_synthetic(300, 200, 5000, seed=0))
    other = generate_synthetic(300, 200, 5000, seed=1)
    assert not first.equals(other)
    with pytest.raises(ConfigError, match="seed"):
        generate_synthetic(300, 200, 5000, seed=None)  # type: ignore[arg-type]


def test_dense_requests_use_the_exact_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 users x 10 items at 95% density: most users need nearly every item, which draws with
    # replacement rarely reach; the exact choice must still give distinct pairs and exact sizes.
    exact_users: list[int] = []
    exact_choice = synthetic._exact_choice

    def counted(*args: Any) -> Any:
        exact_users.append(len(args[3]))
        return exact_choice(*args)

    monkeypatch.setattr(synthetic, "_exact_choice", counted)
    dense = generate_synthetic(20, 10, 190, seed=3)
    assert sum(exact_users) > 0
    assert len(dense) == 190 and not dense.duplicated(["user_id", "item_id"]).any()
    full = generate_synthetic(20, 10, 200, seed=3)
    assert len(full.drop_duplicates(["user_id", "item_id"])) == 200
    with pytest.raises(ConfigError, match="at most 200"):
        generate_synthetic(20, 10, 201)


def test_alias_tables_give_each_factor_law() -> None:
    rng = np.random.default_rng(0)
    probability = rng.dirichlet(np.full(500, 0.1), size=4) * np.exp(-rng.exponential(5.0, 500))
    probability /= probability.sum(axis=1, keepdims=True)
    accept, alias = synthetic._alias_tables(probability)
    n = probability.shape[1]
    for row in range(len(probability)):
        implied = (
            np.bincount(np.arange(n), weights=accept[row], minlength=n)
            + np.bincount(alias[row], weights=1.0 - accept[row], minlength=n)
        ) / n
        np.testing.assert_allclose(implied, probability[row], rtol=1e-9, atol=1e-15)
    assert ((accept >= 0) & (accept <= 1)).all()


@pytest.mark.parametrize(
    "route",
    [
        {},  # as shipped (at 6 items: the exact choice, cheaper than a round of draws)
        # 8 draws each, then the exact choice continues for the users still short.
        {"FIRST_ROUND_DRAWS": 0.0, "DRAW_ROUNDS": 1, "EXACT_DRAWS_PER_ITEM": 2.0},
        {"FIRST_ROUND_DRAWS": 0.0, "EXACT_DRAWS_PER_ITEM": 1e9},  # rounds of draws only
    ],
)
def test_each_user_gets_a_draw_without_replacement(
    monkeypatch: pytest.MonkeyPatch, route: dict[str, float]
) -> None:
    # 20,000 users with the same tastes pick 3 of 6 items: the frequency of each set must match
    # successive sampling from P(i | u), whichever way the items were chosen.
    from itertools import permutations

    from scipy.stats import chisquare

    for name, value in route.items():
        monkeypatch.setattr(synthetic, name, value)
    world = synthetic._make_world(10, 6, 30, 4, 2, SyntheticShape())
    tastes = np.array([0.8, 0.2])
    p = tastes @ world.factor_item_probability
    exact: dict[tuple[int, ...], float] = {}
    for order in permutations(range(6), 3):
        chance, left = 1.0, 1.0
        for item in order:
            chance *= p[item] / left
            left -= p[item]
        key = tuple(sorted(order))
        exact[key] = exact.get(key, 0.0) + chance
    n_users = 20_000
    users, items = synthetic._choose_items(
        world, np.random.default_rng(1), np.tile(tastes, (n_users, 1)), np.full(n_users, 3)
    )
    assert np.bincount(users, minlength=n_users).tolist() == [3] * n_users
    order = np.lexsort((items, users))
    sets = items[order].reshape(n_users, 3)
    assert (np.diff(sets, axis=1) > 0).all()  # distinct items
    observed = pd.Series(map(tuple, sets.tolist())).value_counts()
    keys = sorted(exact)
    counts = np.array([observed.get(key, 0) for key in keys])
    expected = np.array([exact[key] for key in keys]) * n_users
    assert chisquare(counts, expected).pvalue > 1e-3, (counts, expected.round())


def test_packed_sorts_agree_with_their_fallbacks_for_huge_sizes() -> None:
    # The packed-key sorts fall back to np.unique / np.lexsort when the key would pass 63 bits.
    rng = np.random.default_rng(2)
    users, items = np.sort(rng.integers(0, 50, 5000)), rng.integers(0, 40, 5000)
    prior_users, prior_items = rng.integers(0, 50, 300), rng.integers(0, 40, 300)
    prior = np.unique(prior_users * 40 + prior_items)
    prior_users, prior_items = prior // 40, prior % 40
    packed = synthetic._first_new_pairs(prior_users, prior_items, users, items, 50, 40)
    fallback = synthetic._first_new_pairs(prior_users, prior_items, users, items, 50, 1 << 50)
    np.testing.assert_array_equal(packed, fallback)
    seen = set(zip(prior_users.tolist(), prior_items.tolist(), strict=True))
    expected = []
    for position, pair in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        if pair not in seen:
            seen.add(pair)
            expected.append(position)
    assert packed.tolist() == expected
    seconds = rng.integers(0, 1000, 5000)
    fast = synthetic._sorted_rows(users, seconds, items, 50, 1000, 40)
    slow = synthetic._sorted_rows(users, seconds, items, 50, 1 << 62, 40)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    order = np.lexsort((items, seconds, users))
    np.testing.assert_array_equal(fast[1], seconds[order])


def test_files_are_deterministic_and_match_the_frame(tmp_path: Path) -> None:
    sizes = (9000, 300, 60_000)  # more than two generation blocks of users
    expected = generate_synthetic(*sizes, seed=5)
    first, second, parquet = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.parquet"
    rows = write_synthetic(first, *sizes, seed=5, chunk_users=5000)
    assert rows == 60_000
    write_synthetic(second, *sizes, seed=5, chunk_users=1)  # the chunk size does not change the data
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text().splitlines()[0] == "user_id,item_id,rating,timestamp"
    read = pd.read_csv(first, dtype={"user_id": str, "item_id": str})
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)
    write_synthetic(parquet, *sizes, seed=5)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), expected, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "c.parquet"]  # no temp files


def test_generated_file_loads_with_the_documented_ingest_command(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.csv"
    runner = CliRunner()
    sizes = ["--users", "200", "--items", "100", "--interactions", "3000", "--seed", "7"]
    generated = runner.invoke(app, ["generate-synthetic", *sizes, "--out", str(out)])
    assert generated.exit_code == 0, generated.output
    url = f"sqlite:///{tmp_path / 'recsys.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    command = [*INGEST_COMMAND.format(path=out).split()[1:], "--database-url", url]
    ingested = runner.invoke(app, command)
    assert ingested.exit_code == 0, ingested.output
    data = build_interactions(get_engine(url))
    assert len(data) == 3000 and data.shape == (200, 100)
    assert sorted(data.users.to_list()) == sorted(f"u{i}" for i in range(200))


def test_item_catalogue_matches_the_planted_factors() -> None:
    log = generate_synthetic(n_users=300, n_items=200, n_interactions=6000, seed=5)
    items = synthetic_items(200, seed=5)
    assert items.equals(synthetic_items(200, seed=5))
    assert set(log["item_id"]) <= set(items["item_id"])
    assert items["title"].str.startswith("Synthetic item").all()
    genres = dict(zip(items["item_id"], items["genres"].str.split("|"), strict=True))
    assert all(genres.values())

    def top_genre_share(genre_of: dict[str, list[str]]) -> float:
        shares = []
        for _, user_items in log.groupby("user_id")["item_id"]:
            counts = pd.Series([g for item in user_items for g in genre_of[item]]).value_counts()
            top = counts.index[0]
            shares.append(np.mean([top in genre_of[item] for item in user_items]))
        return float(np.mean(shares))

    order = np.random.default_rng(0).permutation(len(genres))
    values = list(genres.values())
    shuffled = dict(zip(genres, [values[i] for i in order], strict=True))
    # Users concentrate on the genres their planted factors favour; shuffled genres do not.
    assert top_genre_share(genres) > 1.25 * top_genre_share(shuffled)


def test_generate_synthetic_writes_the_catalogue_beside_the_events(tmp_path: Path) -> None:
    runner = CliRunner()
    sizes = ["--users", "100", "--items", "60", "--interactions", "1500", "--seed", "3"]
    out = tmp_path / "data" / "events.csv"
    assert runner.invoke(app, ["generate-synthetic", *sizes, "--out", str(out)]).exit_code == 0
    catalogue = tmp_path / "data" / "items.csv"
    read = pd.read_csv(catalogue, dtype=str)
    pd.testing.assert_frame_equal(read, synthetic_items(60, seed=3))
    url = f"sqlite:///{tmp_path / 'recsys.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    loaded = runner.invoke(app, ["ingest", "items", str(catalogue), "--database-url", url, "--json"])
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.output)["reports"][0]["rows_loaded"] == 60

    # --items-out names the file; --no-catalogue writes none; the two files never collide.
    named = tmp_path / "elsewhere" / "catalogue.parquet"
    args = [*sizes, "--out", str(tmp_path / "b.csv"), "--items-out", str(named)]
    assert runner.invoke(app, ["generate-synthetic", *args]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(named), synthetic_items(60, seed=3))
    args = [*sizes, "--out", str(tmp_path / "none" / "c.csv"), "--no-catalogue"]
    assert runner.invoke(app, ["generate-synthetic", *args]).exit_code == 0
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["c.csv"]
    args = [*sizes, "--out", str(tmp_path / "d.csv"), "--items-out", str(tmp_path / "d.csv")]
    clash = runner.invoke(app, ["generate-synthetic", *args])
    assert clash.exit_code == 1 and "is the events file" in str(clash.exception or clash.output)
