"""Batch scoring sharded across Ray workers (``recsys score --engine ray``).

Each worker is a Ray actor that opens the version's :class:`~recsys.retrieval.Retriever` once
(the same loading as the local run: registry artifact, database interactions, fold-in) and then
scores the blocks of users it is handed with :func:`recsys.scoring.score_block`, writing each
with :func:`recsys.scoring.write_part`. Blocks are the local run's blocks (same numbers, same
users), so the parts and the combined file are those the local run writes. Blocks are handed
out one at a time to whichever worker is free (``ray.util.ActorPool``), so a slow node slows only
its own blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import DataError
from recsys.retrieval import RankOptions, Retriever
from recsys.runtime.cluster import RayEngine, worker_count
from recsys.scoring import BlockRange, block_table, score_block, write_part

if TYPE_CHECKING:
    from types import ModuleType

    import pyarrow as pa


class ScoringWorker:
    """One Ray actor's state: the retriever it opened. Run as ``ray.remote(ScoringWorker)``."""

    def __init__(self, open_retriever: Callable[[], Retriever], n_users: int) -> None:
        self.retriever = open_retriever()
        if len(self.retriever.users) != n_users:
            raise DataError(
                f"a worker sees {len(self.retriever.users)} users where the driver saw {n_users}: "
                "the interactions changed while scoring started; run it again"
            )

    def write(self, block: BlockRange, parts: str, options: RankOptions) -> int:
        scored = score_block(self.retriever, block, options)
        return write_part(Path(parts), scored, self.retriever.users, self.retriever.items)

    def table(self, block: BlockRange, options: RankOptions) -> pa.Table:
        return block_table(
            score_block(self.retriever, block, options), self.retriever.users, self.retriever.items
        )


class RayBlockScorer:
    """A :class:`recsys.scoring.BlockScorer` over Ray actors, for the length of a
    :func:`recsys.runtime.cluster.ray_session`.

    ``open_retriever`` is a picklable callable that opens the version's retriever in a worker;
    ``n_users`` is what the driver's own retriever has (a worker that sees another count stops).
    """

    def __init__(
        self, ray: ModuleType, engine: RayEngine, open_retriever: Callable[[], Retriever], n_users: int
    ) -> None:
        self.ray = ray
        self.workers = worker_count(ray, engine)
        self.open_retriever, self.n_users = open_retriever, n_users

    def _pool(self, n_blocks: int) -> Any:
        from ray.util import ActorPool

        actor = self.ray.remote(num_cpus=1)(ScoringWorker)
        count = max(1, min(self.workers, n_blocks))
        return ActorPool([actor.remote(self.open_retriever, self.n_users) for _ in range(count)])

    def write_parts(self, blocks: Sequence[BlockRange], parts: Path, options: RankOptions) -> None:
        if not blocks:
            return
        pool = self._pool(len(blocks))
        folder = str(Path(parts).resolve())
        for _ in pool.map_unordered(lambda actor, block: actor.write.remote(block, folder, options), blocks):
            pass  # each worker writes its Parquet part itself; draining the pool waits for them all

    def tables(self, blocks: Sequence[BlockRange], options: RankOptions) -> Iterator[pa.Table]:
        if not blocks:
            return
        pool = self._pool(len(blocks))
        yield from pool.map(lambda actor, block: actor.table.remote(block, options), blocks)
