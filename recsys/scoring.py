"""Batch offline scoring: every user's top k, in blocks of users, to Parquet or the database.

Scoring ranks through the version's :class:`~recsys.retrieval.Retriever`, the object the service
answers with (its index, fold-in, exclusion of seen items, filters and popular fallback), one
block of users at a time, so memory is bounded by ``block_size x n_items`` scores at most.
Parquet output is written per block into a hidden parts folder that a re-run resumes from;
database output replaces the version's rows in one transaction.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy import Engine, delete, insert

from recsys.data.interactions import IdMap
from recsys.db.engine import session_scope
from recsys.db.models import Recommendation
from recsys.errors import ConfigError
from recsys.index.base import PAD_ID
from recsys.retrieval import RankOptions, Retriever, align_to_model

__all__ = [
    "BlockRange",
    "BlockScorer",
    "align_to_model",
    "block_ranges",
    "block_table",
    "rank_options",
    "score_all_users",
    "score_block",
    "write_database",
    "write_parquet",
    "write_part",
]

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET_COLUMNS = ("user_id", "rank", "item_id", "score")
#: Rows per INSERT statement when writing to the database.
INSERT_CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class ScoredBlock:
    """Top-k lists of one block of users: internal user indices, item indices and scores."""

    number: int
    users: np.ndarray  # (n,) int64 user indices
    item_ids: np.ndarray  # (n, k) int64 item indices, PAD_ID where a list is short
    scores: np.ndarray  # (n, k) float32, -inf where padded


@dataclass(frozen=True)
class BlockRange:
    """One block of users to score: its number (the part file's) and its user index range."""

    number: int
    start: int
    stop: int


def block_ranges(n_users: int, block_size: int) -> list[BlockRange]:
    """The blocks of ``block_size`` users that cover ``n_users``, numbered from 0: the one cut that
    the local run and the Ray workers share, so that both write the same parts."""
    if block_size < 1:
        raise ConfigError(f"block_size must be at least 1, got {block_size}")
    starts = range(0, n_users, block_size)
    return [
        BlockRange(number, start, min(start + block_size, n_users)) for number, start in enumerate(starts)
    ]


def rank_options(k: int, options: RankOptions | None) -> RankOptions:
    """``options`` (default: none) with ``k`` items per list; refuses ``k`` below 1."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    return replace(options or RankOptions(), k=k)


def score_block(retriever: Retriever, block: BlockRange, options: RankOptions) -> ScoredBlock:
    """Top-k lists of one block's users, through :meth:`Retriever.recommend_known`."""
    users = np.arange(block.start, block.stop, dtype=np.int64)
    ranking = retriever.recommend_known(users, options)
    return ScoredBlock(block.number, users, ranking.item_ids, ranking.scores)


def score_all_users(
    retriever: Retriever,
    k: int,
    block_size: int = 4096,
    options: RankOptions | None = None,
    progress: bool = False,
    *,
    skip_blocks: Container[int] = (),
) -> Iterator[ScoredBlock]:
    """Top ``k`` items of every user of ``retriever``'s snapshot, one block of ``block_size``
    users at a time, through :meth:`Retriever.recommend_known` (the lists the service answers).

    ``options`` adds filters and exclusions (its ``k`` is replaced by ``k``); blocks whose number
    is in ``skip_blocks`` (already written by an interrupted run) are not computed.
    """
    options = rank_options(k, options)
    blocks: Iterable[BlockRange] = [
        block for block in block_ranges(len(retriever.users), block_size) if block.number not in skip_blocks
    ]
    if progress:
        from rich.progress import track

        blocks = track(blocks, description="scoring users")
    for block in blocks:
        yield score_block(retriever, block, options)


def block_table(block: ScoredBlock, users: IdMap, items: IdMap) -> pa.Table:
    """A block as an Arrow table of ``user_id, rank, item_id, score`` (external ids, rank from 1)."""
    import pyarrow as pa

    schema = pa.schema(
        [("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32())]
    )
    filled = block.item_ids != PAD_ID
    row, column = np.nonzero(filled)
    return pa.table(
        {
            "user_id": pa.array(users.external_ids[block.users[row]].astype(str)),
            "rank": pa.array((column + 1).astype(np.int32)),
            "item_id": pa.array(items.external_ids[block.item_ids[row, column]].astype(str)),
            "score": pa.array(block.scores[row, column].astype(np.float32)),
        },
        schema=schema,
    )


def write_part(parts: Path, block: ScoredBlock, users: IdMap, items: IdMap) -> int:
    """Write one block's table as ``parts/part-NNNNNN.parquet`` (renamed into place when complete,
    so a part that exists is whole); returns its rows. Local runs and Ray workers both write here."""
    import pyarrow.parquet as pq

    table = block_table(block, users, items)
    part = Path(parts) / f"part-{block.number:06d}.parquet"
    pq.write_table(table, part.with_suffix(".tmp"))
    os.replace(part.with_suffix(".tmp"), part)
    return int(table.num_rows)


class BlockScorer(Protocol):
    """Scores blocks elsewhere than in this process (:mod:`recsys.ray_scoring`): each worker
    opens the same version's retriever and runs :func:`score_block` on the blocks it is given."""

    def write_parts(self, blocks: Sequence[BlockRange], parts: Path, options: RankOptions) -> None:
        """Write each block with :func:`write_part` into ``parts``."""

    def tables(self, blocks: Sequence[BlockRange], options: RankOptions) -> Iterator[pa.Table]:
        """Each block's :func:`block_table`, in the order of ``blocks``."""


def write_parquet(
    retriever: Retriever,
    path: Path,
    *,
    k: int,
    version: str,
    block_size: int = 4096,
    options: RankOptions | None = None,
    progress: bool = False,
    scorer: BlockScorer | None = None,
) -> int:
    """Score every user into ``path`` (Parquet); returns the number of rows written.

    Blocks go to ``.<name>.parts/`` first, each renamed into place when complete; a re-run with
    the same version, k and block size skips the finished blocks. The parts are then combined
    into a temporary file that replaces ``path`` in one rename. With a ``scorer`` the blocks are
    scored and written by its workers (the folder must be one they all see); the parts, and so
    the file, are the same as this process would write.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = path.parent / f".{path.name}.parts"
    manifest = {
        "version": version,
        "k": k,
        "block_size": block_size,
        "n_users": len(retriever.users),
        "options": repr(options),
    }
    manifest_file = parts / "manifest.json"
    if parts.exists() and (not manifest_file.is_file() or json.loads(manifest_file.read_text()) != manifest):
        shutil.rmtree(parts)  # left by a run with other parameters: its blocks do not fit
    parts.mkdir(exist_ok=True)
    manifest_file.write_text(json.dumps(manifest))
    done = {int(part.stem.split("-")[1]) for part in parts.glob("part-*.parquet")}
    users, items = retriever.users, retriever.items
    if scorer is not None:
        todo = [block for block in block_ranges(len(users), block_size) if block.number not in done]
        scorer.write_parts(todo, parts, rank_options(k, options))
    else:
        for block in score_all_users(retriever, k, block_size, options, progress=progress, skip_blocks=done):
            write_part(parts, block, users, items)
    temp = path.with_name(f".{path.name}.tmp")
    written = 0
    empty = ScoredBlock(-1, np.zeros(0, np.int64), np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    schema = block_table(empty, users, items).schema
    with pq.ParquetWriter(temp, schema) as writer:
        for part in sorted(parts.glob("part-*.parquet")):
            table = pq.read_table(part)
            writer.write_table(table)
            written += table.num_rows
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    shutil.rmtree(parts)
    return written


def write_database(
    engine: Engine,
    retriever: Retriever,
    *,
    k: int,
    version: str,
    block_size: int = 4096,
    options: RankOptions | None = None,
    progress: bool = False,
    scorer: BlockScorer | None = None,
) -> int:
    """Replace ``version``'s rows of the ``recommendations`` table with every user's top k.

    Delete and inserts run in one transaction: readers see the old lists or the new ones, and an
    interrupted run changes nothing (re-running it recomputes everything, which is fast). With a
    ``scorer`` its workers score the blocks and this process inserts their tables in block order.
    """
    tables: Iterable[pa.Table]
    if scorer is not None:
        blocks = block_ranges(len(retriever.users), block_size)
        tables = scorer.tables(blocks, rank_options(k, options))
    else:
        scored = score_all_users(retriever, k, block_size, options, progress=progress)
        tables = (block_table(block, retriever.users, retriever.items) for block in scored)
    written = 0
    with session_scope(engine) as session:
        session.execute(delete(Recommendation).where(Recommendation.version == version))
        for table in tables:
            rows = table.to_pylist()
            for start in range(0, len(rows), INSERT_CHUNK_ROWS):
                chunk = rows[start : start + INSERT_CHUNK_ROWS]
                session.execute(insert(Recommendation), [{"version": version, **row} for row in chunk])
            written += len(rows)
    return written
