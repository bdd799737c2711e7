"""Seeded synthetic interaction logs with planted structure, for demos, tests and scale figures.

The generative model is a low-rank mixture ("topic") model, chosen because it samples in time
linear in the number of interactions whatever the catalogue size:

- ``rank`` latent factors. Each user has planted factor weights ``theta_u`` (a sparse Dirichlet:
  most users care about a few factors), each item planted factor memberships ``psi_i`` (likewise);
- item popularity follows a power law (Zipf: the item of popularity rank r gets weight
  ``(r + 1) ** -popularity_exponent``), in a random order of item ids;
- a user picks items from ``P(i | u) = sum_f theta_uf P(i | f)`` with ``P(i | f)`` proportional to
  ``popularity_i * psi_fi``: a non-negative rank-``rank`` matrix times the popularity law.
  Each user's items are a draw WITHOUT replacement: draws with replacement (a factor, then an
  item from that factor's alias table), first occurrences kept, which is the same distribution,
  in a few rounds sized by the probability the user's items already hold; users for whom more
  draws would cost more than the catalogue get their remaining items from an exact choice
  (exponential keys, equivalent to Gumbel-top-k) over the items they do not hold yet;
- user activity is heavy-tailed (lognormal weights, at least ``min_user_interactions`` each);
- ratings are ``rating_mean + rating_scale * affinity + user and item biases + noise``, rounded
  and clipped to 1..5, where the affinity ``log(rank * theta_u . psi_i)`` is 0 for an average
  pair; timestamps fall in each user's active period within two years.

Users are generated in blocks of ``USERS_PER_BLOCK``, each from its own seeded stream, so the
output does not depend on how many users a writer holds in memory at a time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import ConfigError

USERS_PER_BLOCK = 4096
# Draws with replacement per wanted item in a user's first round (plus 8).
FIRST_ROUND_DRAWS = 1.25
# Later rounds: draws per missing item divided by the share of new items in the user's last
# round (plus 8).
NEXT_ROUND_DRAWS = 1.25
# Rounds of draws at most before the exact choice takes the users still short.
DRAW_ROUNDS = 4
# A user whose next round would take more draws than this per catalogue item gets the exact
# choice instead, which costs about as much as that many draws.
EXACT_DRAWS_PER_ITEM = 0.1
COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class SyntheticShape:
    """How the generated data looks.

    The defaults resemble ml-100k at its size: the top 10% of items hold about 40% of the
    interactions, the rating histogram is within a few points of MovieLens's, and a rank-16
    truncated SVD beats popularity by a wide margin in nDCG@10 (as on the real data).
    """

    popularity_exponent: float = 1.1  # Zipf exponent of item popularity
    activity_sigma: float = 1.0  # sigma of the lognormal user-activity weights
    min_user_interactions: int = 5  # so that every user can be evaluated under Protocol K
    user_concentration: float = 0.1  # Dirichlet parameter of user factor weights (small = focused)
    item_concentration: float = 0.1  # Dirichlet parameter of item factor memberships
    rating_mean: float = 3.3
    rating_scale: float = 0.7  # rating points per unit of affinity
    bias_std: float = 0.4  # user and item rating biases
    rating_noise: float = 0.7
    start_timestamp: int = 1_577_836_800  # 2020-01-01T00:00:00Z
    span_seconds: int = 2 * 365 * 86_400


@dataclass(frozen=True)
class _World:
    """What every block shares: sizes, item factors, per-factor item laws and user activity."""

    n_users: int
    n_items: int
    rank: int
    seed: int
    shape: SyntheticShape
    item_factors: np.ndarray  # psi: (n_items, rank), rows sum to 1
    factor_item_probability: np.ndarray  # P(i | f): (rank, n_items), rows sum to 1
    item_accept: np.ndarray  # alias tables of the rows of P(i | f), laid end to end (rank * n_items)
    item_alias: np.ndarray
    item_bias: np.ndarray
    user_counts: np.ndarray  # interactions per user, summing to n_interactions


def generate_synthetic(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 42,
    rank: int = 16,
    shape: SyntheticShape | None = None,
) -> pd.DataFrame:
    """A synthetic log of exactly ``n_interactions`` distinct (user, item) pairs.

    Columns ``user_id`` ("u0".."u{n_users-1}"), ``item_id`` ("i0".."i{n_items-1}"), ``rating``
    (integer 1..5) and ``timestamp`` (epoch seconds), sorted by user then time. The same
    arguments give the same frame; for sizes that do not fit in memory use
    :func:`write_synthetic`.
    """
    world = _make_world(n_users, n_items, n_interactions, seed, rank, shape or SyntheticShape())
    blocks = list(_blocks(world))
    return _frame({name: np.concatenate([block[name] for block in blocks]) for name in COLUMNS})


def write_synthetic(
    path: str | os.PathLike[str],
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 42,
    rank: int = 16,
    *,
    chunk_users: int = 16_384,
    shape: SyntheticShape | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write :func:`generate_synthetic`'s data to CSV (or Parquet when ``path`` ends in .parquet).

    Memory holds about ``chunk_users`` users' interactions at a time. The file appears
    atomically (written beside ``path``, then renamed); ``progress`` is called with the number of
    rows of each written chunk. Returns the number of rows. The CSV loads with
    ``recsys ingest csv PATH --user-col user_id --item-col item_id --value-col rating
    --timestamp-col timestamp --kind rating``.
    """
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be at least 1, got {chunk_users}")
    world = _make_world(n_users, n_items, n_interactions, seed, rank, shape or SyntheticShape())
    target = Path(path)
    written = 0
    with _atomic_file(target) as temporary, _TableWriter(temporary, parquet=_is_parquet(target)) as writer:
        for table in _tables(world, chunk_users):
            writer.write(table)
            written += table.num_rows
            if progress is not None:
                progress(table.num_rows)
    return written


def write_synthetic_items(path: str | os.PathLike[str], n_items: int, seed: int = 42, rank: int = 16) -> int:
    """Write :func:`synthetic_items` (``item_id,title,genres``) to CSV, or Parquet when ``path``
    ends in .parquet, atomically. Returns the number of items. Loads with ``recsys ingest items PATH``.
    """
    catalogue = pa.Table.from_pandas(synthetic_items(n_items, seed, rank), preserve_index=False)
    target = Path(path)
    with _atomic_file(target) as temporary, _TableWriter(temporary, parquet=_is_parquet(target)) as writer:
        writer.write(catalogue)
    return catalogue.num_rows


def default_items_path(events_path: Path) -> Path:
    """Where ``recsys generate-synthetic`` puts the catalogue: ``items.csv`` (or ``.parquet``, like the
    events) beside the events file, or ``<events name>.items.csv`` when the events file is itself
    called ``items``."""
    suffix = ".parquet" if _is_parquet(events_path) else ".csv"
    beside = events_path.with_name(f"items{suffix}")
    return beside if beside != events_path else events_path.with_name(f"{events_path.stem}.items{suffix}")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


@contextlib.contextmanager
def _atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it when the block succeeds and is deleted
    when it fails, so readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    _umask_permissions(Path(temporary))
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def synthetic_items(
    n_items: int, seed: int = 42, rank: int = 16, shape: SyntheticShape | None = None
) -> pd.DataFrame:
    """The item catalogue of :func:`generate_synthetic`'s items (same ``n_items``, seed and rank).

    Columns ``item_id``, ``title`` and ``genres`` ("|"-separated): an item's genres are the
    planted factors that make up at least a quarter of its membership, named "Genre <factor>",
    so genre filters and titles behave as on MovieLens. Loads with ``ItemSpec()`` as is.
    """
    if not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ConfigError(f"n_items must be a positive integer, got {n_items!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    memberships = _draw_item_factors(rng, n_items, rank, shape or SyntheticShape())
    strong = memberships >= 0.25
    strong[np.arange(n_items), memberships.argmax(axis=1)] = True  # every item has a genre
    names = np.array([f"Genre {factor}" for factor in range(rank)], dtype=object)
    genres = ["|".join(names[row]) for row in strong]  # one string per item: the catalogue's format
    return pd.DataFrame(
        {
            "item_id": [f"i{item}" for item in range(n_items)],
            "title": [f"Synthetic item {item}" for item in range(n_items)],
            "genres": genres,
        }
    )


def _draw_item_factors(
    rng: np.random.Generator, n_items: int, rank: int, shape: SyntheticShape
) -> np.ndarray:
    """Planted item factor memberships; the first draw of a seed's stream (the catalogue
    re-draws them from the seed alone, without the users)."""
    return rng.dirichlet(np.full(rank, shape.item_concentration), size=n_items)


def _make_world(
    n_users: int, n_items: int, n_interactions: int, seed: int, rank: int, shape: SyntheticShape
) -> _World:
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_interactions", n_interactions)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if n_interactions > n_users * n_items:
        raise ConfigError(
            f"{n_interactions:,} interactions do not fit {n_users:,} users x {n_items:,} items "
            f"without repeating a pair; ask for at most {n_users * n_items:,}"
        )
    if not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ConfigError(f"rank must be a positive integer, got {rank!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (0 is a valid fixed seed), got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    item_factors = _draw_item_factors(rng, n_items, rank, shape)
    popularity = np.exp(-shape.popularity_exponent * np.log1p(rng.permutation(n_items)))
    factor_item = (item_factors * popularity[:, None]).T
    factor_item /= factor_item.sum(axis=1, keepdims=True)
    accept, alias = _alias_tables(factor_item)
    item_bias = rng.normal(0.0, shape.bias_std, n_items)
    activity = rng.lognormal(0.0, shape.activity_sigma, n_users)
    floor = min(shape.min_user_interactions, n_interactions // n_users, n_items)
    counts = floor + _allocate(n_interactions - floor * n_users, activity, n_items - floor)
    return _World(
        n_users=int(n_users),
        n_items=int(n_items),
        rank=int(rank),
        seed=int(seed),
        shape=shape,
        item_factors=item_factors,
        factor_item_probability=factor_item,
        item_accept=accept.ravel(),
        item_alias=alias.ravel(),
        item_bias=item_bias,
        user_counts=counts,
    )


def _alias_tables(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables, one per row of ``probability`` (rows summing to 1): column j of row f keeps
    item j with probability ``accept[f, j]`` and gives ``alias[f, j]`` otherwise; a column drawn
    uniformly then gives row f's law exactly (up to rounding).

    Built in vectorised rounds (Vose's pairing, many pairs at a time): every column below its fair
    share 1/n takes its deficit from the over-full column whose cumulative excess covers the start
    of its own cumulative deficit; an over-full column charged past its excess becomes under-full
    for the next round. Each round settles all under-full columns, so a few rounds suffice.
    """
    rows, n = probability.shape
    accept = np.ones((rows, n))
    alias = np.tile(np.arange(n, dtype=np.int64), (rows, 1))
    for f in range(rows):
        share = probability[f] * n
        open_ = np.arange(n)
        while len(open_):
            q = share[open_]
            small, large = open_[q < 1.0], open_[q >= 1.0]
            if len(small) == 0 or len(large) == 0:
                break  # what is left is within rounding of a full column
            deficit = 1.0 - share[small]
            excess = share[large] - 1.0
            start = np.cumsum(deficit) - deficit
            owner = np.minimum(np.searchsorted(np.cumsum(excess), start, side="right"), len(large) - 1)
            accept[f, small] = share[small]
            alias[f, small] = large[owner]
            share[large] -= np.bincount(owner, weights=deficit, minlength=len(large))
            open_ = large
    return accept, alias


def _allocate(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Integers proportional to ``weights``, each at most ``cap``, summing exactly to ``total``.

    Shares above the cap are clipped and the excess shared among the others (a few rounds at
    most); the fractional remainder goes to the largest fractional parts.
    """
    share = np.zeros(len(weights))
    free = np.ones(len(weights), dtype=bool)
    remaining = float(total)
    while remaining > 1e-9 and free.any():
        share[free] += remaining * weights[free] / weights[free].sum()
        over = share > cap
        remaining = float((share[over] - cap).sum())
        share[over] = cap
        free &= ~over
    counts = np.floor(share).astype(np.int64)
    leftover = total - int(counts.sum())
    if leftover > 0:
        fraction = np.where(counts < cap, share - counts, -1.0)
        counts[np.argsort(-fraction, kind="stable")[:leftover]] += 1
    return counts


def _blocks(world: _World) -> Iterator[dict[str, np.ndarray]]:
    for block, start in enumerate(range(0, world.n_users, USERS_PER_BLOCK)):
        yield _generate_block(world, block, start, min(start + USERS_PER_BLOCK, world.n_users))


def _generate_block(world: _World, block: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """The interactions of users ``start..stop-1``."""
    shape = world.shape
    rng = np.random.default_rng(np.random.SeedSequence(world.seed, spawn_key=(block,)))
    n = stop - start
    wanted = world.user_counts[start:stop]
    user_factors = rng.dirichlet(np.full(world.rank, shape.user_concentration), size=n)
    user_bias = rng.normal(0.0, shape.bias_std, n)
    users, items = _choose_items(world, rng, user_factors, wanted)
    first_seen = rng.uniform(0.0, 0.9, n) * shape.span_seconds
    active = np.maximum((shape.span_seconds - first_seen) * rng.beta(1.0, 3.0, n), 86_400)
    offset = first_seen[users] + rng.random(len(users)) * active[users]
    seconds = np.minimum(offset, shape.span_seconds).astype(np.int64)
    users, seconds, items = _sorted_rows(users, seconds, items, n, shape.span_seconds, world.n_items)

    # Ratings after the sort: the noise is drawn per row, so the row order does not change its law.
    # (np.take: twice as fast as fancy indexing for gathering rows.)
    affinity = np.log(
        world.rank
        * np.einsum(
            "ij,ij->i", np.take(user_factors, users, axis=0), np.take(world.item_factors, items, axis=0)
        )
        + 1e-3
    )
    noise = rng.normal(0.0, shape.rating_noise, len(users))
    raw = (
        shape.rating_mean + shape.rating_scale * affinity + user_bias[users] + world.item_bias[items] + noise
    )
    return {
        "user_id": users + start,
        "item_id": items,
        "rating": np.clip(np.rint(raw), 1, 5).astype(np.int8),
        "timestamp": shape.start_timestamp + seconds,
    }


def _sorted_rows(
    users: np.ndarray, seconds: np.ndarray, items: np.ndarray, n_users: int, span: int, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows sorted by user, then time, then item."""
    item_bits, second_bits = (n_items - 1).bit_length(), span.bit_length()
    if (n_users - 1).bit_length() + second_bits + item_bits <= 63:
        # One plain sort of the packed row: several times faster than a three-key lexsort.
        key = (((users << second_bits) | seconds) << item_bits) | items
        key.sort()
        mask = (1 << item_bits) - 1
        return key >> (second_bits + item_bits), (key >> item_bits) & ((1 << second_bits) - 1), key & mask
    order = np.lexsort((items, seconds, users))
    return users[order], seconds[order], items[order]


def _choose_items(
    world: _World, rng: np.random.Generator, user_factors: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``wanted[u]`` distinct items for each user u of the block, drawn without replacement from
    P(i | u): (user, item) pairs.

    The distinct items of i.i.d. draws in draw order are a draw without replacement (successive
    sampling). Users short of items after a round draw again, as many as their missing items
    need at the rate new items came in their last round; a user whose next round would cost more
    than the catalogue (``EXACT_DRAWS_PER_ITEM``), or who is still short after ``DRAW_ROUNDS``,
    gets the rest from :func:`_exact_choice` over the items it does not hold yet. Which way a
    user continues depends only on its past draws, and the next new item of i.i.d. draws follows
    P(i | u) restricted to the items not held, so the result stays exact.
    """
    n = len(wanted)
    factor_cdf = np.cumsum(user_factors, axis=1)
    held_users: list[np.ndarray] = []
    held_items: list[np.ndarray] = []
    have = np.zeros(n, np.int64)
    users = np.arange(n)
    draws = np.ceil(FIRST_ROUND_DRAWS * wanted).astype(np.int64) + 8
    exact = np.zeros(n, dtype=bool)
    for _ in range(DRAW_ROUNDS):
        costly = draws > EXACT_DRAWS_PER_ITEM * world.n_items
        exact[users[costly]] = True
        users, draws = users[~costly], draws[~costly]
        if len(users) == 0:
            break
        prior_users, prior_items = _held_by(users, n, held_users, held_items)
        new_users = np.repeat(users, draws)
        new_items = _draw_items(world, rng, factor_cdf[users], draws)
        fresh = _first_new_pairs(prior_users, prior_items, new_users, new_items, n, world.n_items)
        fresh_users = new_users[fresh]
        keep = _rank_in_runs(fresh_users, n) < (wanted - have)[fresh_users]
        held_users.append(fresh_users[keep])
        held_items.append(new_items[fresh][keep])
        have += np.bincount(held_users[-1], minlength=n)
        new_rate = np.bincount(fresh_users, minlength=n)[users] / draws  # short users kept all
        short = have[users] < wanted[users]
        users, new_rate = users[short], new_rate[short]
        if len(users) == 0:
            break
        # The share of draws that were new falls as a user's items pile up: size the next round
        # by it, with a margin.
        missing = wanted[users] - have[users]
        need = NEXT_ROUND_DRAWS * missing / np.maximum(new_rate, 1e-9)
        draws = np.ceil(np.minimum(need, 2.0 * world.n_items)).astype(np.int64) + 8
    exact[users] = True
    exact_users = np.flatnonzero(exact)
    if len(exact_users):
        prior_users, prior_items = _held_by(exact_users, n, held_users, held_items)
        chosen_users, chosen_items = _exact_choice(
            world,
            rng,
            user_factors,
            exact_users,
            wanted[exact_users] - have[exact_users],
            prior_users,
            prior_items,
        )
        held_users.append(chosen_users)
        held_items.append(chosen_items)
    return np.concatenate(held_users), np.concatenate(held_items)


def _held_by(
    users: np.ndarray, n: int, held_users: list[np.ndarray], held_items: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) pairs already chosen for ``users``."""
    if not held_users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    wanted = np.zeros(n, dtype=bool)
    wanted[users] = True
    pairs_users, pairs_items = np.concatenate(held_users), np.concatenate(held_items)
    mask = wanted[pairs_users]
    return pairs_users[mask], pairs_items[mask]


def _draw_items(
    world: _World, rng: np.random.Generator, factor_cdf: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """``draws[r]`` items for the user of row r of ``factor_cdf`` (its cumulative factor weights),
    in row order: a factor from the user's weights (inverse CDF), then an item from that factor's
    law (its alias table: a uniform column, kept or swapped for its alias)."""
    total = int(draws.sum())
    u = rng.random(total)
    factor = np.zeros(total, np.int64)
    for column in factor_cdf.T[:-1]:  # a cumulative sum can end a hair below 1.0: the last factor takes it
        factor += u >= np.repeat(column, draws)
    column = rng.integers(0, world.n_items, total)
    cell = factor * world.n_items + column
    return np.where(rng.random(total) < world.item_accept[cell], column, world.item_alias[cell])


def _first_new_pairs(
    prior_users: np.ndarray,
    prior_items: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
) -> np.ndarray:
    """Positions, increasing, of the first occurrence of each (user, item) pair among ``users``
    and ``items`` that is not a prior pair."""
    pair = users * n_items + items
    prior = prior_users * n_items + prior_items
    position_bits = len(users).bit_length()
    if (n_users * n_items - 1).bit_length() + position_bits <= 63:
        # One plain sort of pair << bits | position (prior pairs at position 0, draws at 1..):
        # much faster than the stable argsort of np.unique.
        key = np.concatenate([prior << position_bits, (pair << position_bits) | np.arange(1, len(pair) + 1)])
        key.sort()
        group = key >> position_bits
        first = np.ones(len(key), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        position = key[first] & ((1 << position_bits) - 1)
        position = position[position > 0] - 1
        position.sort()
        return position
    _, first_index = np.unique(np.concatenate([prior, pair]), return_index=True)
    position = first_index[first_index >= len(prior)] - len(prior)
    position.sort()
    return position


def _exact_choice(
    world: _World,
    rng: np.random.Generator,
    user_factors: np.ndarray,
    users: np.ndarray,
    missing: np.ndarray,
    held_users: np.ndarray,
    held_items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``missing[j]`` more items for ``users[j]``, without replacement from P(i | u) over the
    items it does not hold: the smallest exponential keys E / P(i | u) (Efraimidis-Spirakis,
    the same law as Gumbel-top-k), dense over the catalogue, for the few users (the most active)
    for whom draws with replacement would cost more."""
    out_users, out_items = [], []
    rows = max(1, (1 << 22) // world.n_items)  # bound the dense (users x items) block to ~32 MB
    row_of = np.full(len(user_factors), -1)
    for start in range(0, len(users), rows):
        group = users[start : start + rows]
        weight = user_factors[group] @ world.factor_item_probability
        with np.errstate(divide="ignore"):  # an item outside all of a user's factors: key +inf
            keys = rng.standard_exponential(weight.shape) / weight
        row_of[group] = np.arange(len(group))
        held = row_of[held_users] >= 0
        keys[row_of[held_users[held]], held_items[held]] = np.nan  # sorts after every item not held
        row_of[group] = -1
        k = missing[start : start + rows]
        widest = int(k.max())
        # Only the set of the k smallest matters: partition at the largest k, sort just that slice.
        top = np.argpartition(keys, widest - 1, axis=1)[:, :widest]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        row, position = np.nonzero(np.arange(widest)[None, :] < k[:, None])
        out_users.append(group[row])
        out_items.append(top[row, position])
    return np.concatenate(out_users), np.concatenate(out_items)


def _rank_in_runs(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """0-based position of each element in its run of a non-decreasing ``groups``."""
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    return np.arange(len(groups)) - starts[groups]


def _tables(world: _World, chunk_users: int) -> Iterator[pa.Table]:
    """Arrow tables of about ``chunk_users`` users each (whole generation blocks)."""
    pending: list[dict[str, np.ndarray]] = []
    users = 0
    for start, block in zip(range(0, world.n_users, USERS_PER_BLOCK), _blocks(world), strict=True):
        pending.append(block)
        users += min(USERS_PER_BLOCK, world.n_users - start)
        if users >= chunk_users:
            yield _table(pending)
            pending, users = [], 0
    if pending:
        yield _table(pending)


def _table(blocks: list[dict[str, np.ndarray]]) -> pa.Table:
    columns = {name: np.concatenate([block[name] for block in blocks]) for name in COLUMNS}
    return pa.table(
        {
            "user_id": _prefixed("u", columns["user_id"]),
            "item_id": _prefixed("i", columns["item_id"]),
            "rating": pa.array(columns["rating"], pa.int8()),
            "timestamp": pa.array(columns["timestamp"], pa.int64()),
        }
    )


def _prefixed(prefix: str, indices: np.ndarray) -> pa.Array:
    # Arrow formats the numbers in C++: building 25M Python strings would dominate the run time.
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(indices), pa.string()), "")


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": _prefixed("u", columns["user_id"]).to_pandas(),
            "item_id": _prefixed("i", columns["item_id"]).to_pandas(),
            "rating": columns["rating"].astype(np.int64),
            "timestamp": columns["timestamp"],
        }
    )


def _umask_permissions(path: Path) -> None:
    """Give a ``mkstemp`` file (created 0600) the permissions a plain ``open`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


class _TableWriter:
    """Appends Arrow tables to one CSV (header once, no quoting) or Parquet file."""

    def __init__(self, path: Path, parquet: bool) -> None:
        self.path, self.parquet = path, parquet
        self._writer: Any = None
        self._file = path.open("wb")

    def __enter__(self) -> _TableWriter:
        return self

    def write(self, table: pa.Table) -> None:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        if self._writer is None:
            if self.parquet:
                self._writer = pq.ParquetWriter(self._file, table.schema)
            else:
                # Written by hand: older pyarrow quotes header names whatever the options say.
                self._file.write((",".join(table.column_names) + "\n").encode("utf-8"))
                options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
                self._writer = pa_csv.CSVWriter(self._file, table.schema, write_options=options)
        self._writer.write_table(table)

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
