"""Implicit ALS half-steps sharded by rows across Ray workers (``FitOptions.engine``).

A half-step solves every user against fixed item vectors (or every item against fixed user
vectors), and each row's system depends only on its own interactions, the other side's vectors
and their Gram matrix. So the rows are cut into one contiguous range per worker (balanced by
interactions); each worker (a Ray actor) keeps its ranges' confidence rows, converted once to the
model's solve sides, and for every half-step receives the other side's vectors and their Gram
matrix (one ``ray.put`` each, shared by all workers) and its rows' current vectors, and returns
its rows solved by the model's own block solve (:meth:`ImplicitALS._solve`, the local kernel).
The loss is summed the same way: each worker's share of the objective, added up here.

The driver still holds the whole matrix (it reads the log and cuts the shards); what is spread is
the solve, whose cost grows with interactions x factors x steps. Results equal a local fit up to
float rounding: the same rows are solved by the same kernel, only in other blocks.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import scipy.sparse as sp

from recsys.models.ials import FactorSweeps
from recsys.runtime.cluster import RayEngine, ray_session, worker_count

if TYPE_CHECKING:
    from recsys.models.ials import ImplicitALS

SIDES = ("users", "items")


def row_ranges(counts: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges (some may be empty) holding about equal interactions."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    cuts = [int(np.searchsorted(ends, total * part / parts, side="left")) for part in range(1, parts)]
    bounds = [0, *cuts, len(counts)]
    return [(bounds[i], max(bounds[i], bounds[i + 1])) for i in range(parts)]


class ShardWorker:
    """One Ray actor: a range of users and a range of items, as the model's solve sides."""

    def __init__(self, config: dict[str, Any], user_rows: sp.csr_matrix, item_rows: sp.csr_matrix) -> None:
        from recsys.models.ials import ImplicitALS

        self.model = ImplicitALS(**config)
        solver = self.model.config.solver
        self.rows = {"users": user_rows, "items": item_rows}
        self.sides = {side: self.model._side(rows, solver) for side, rows in self.rows.items()}

    def solve(self, side: str, other: np.ndarray, gram: np.ndarray, current: np.ndarray) -> np.ndarray:
        """New vectors of this worker's rows of ``side`` against the fixed ``other`` side."""
        if not len(current):
            return current
        return self.model._solve(self.sides[side], other, current, self.model.config.solver, gram=gram)

    def loss_terms(self, users: np.ndarray, items: np.ndarray) -> tuple[float, float]:
        """This worker's users' share of the weighted objective (without the item regularisation)
        and of the total confidence: the model's loss times the confidence it divided by."""
        if not len(users):
            return 0.0, 0.0
        rows = self.rows["users"]
        confidence = float(len(users)) * len(items) + float(rows.data.sum(dtype=np.float64))
        loss = self.model._loss(self.sides["users"], np.zeros(len(items), np.float32), users, items)
        return loss * confidence, confidence


class ShardedSweeps(FactorSweeps):
    """The epoch step of iALS (as ``ials._Sweeps``) with each half-step solved by Ray workers.

    A context manager: entering joins (or starts) the Ray of ``engine`` and starts the workers,
    leaving stops them.
    """

    def __init__(
        self,
        model: ImplicitALS,
        confidence: sp.csr_matrix,
        item_confidence: sp.csr_matrix,
        users: np.ndarray,
        items: np.ndarray,
        engine: RayEngine,
    ) -> None:
        config = model.config
        self.model, self.users, self.items, self.engine = model, users, items, engine
        self.confidence, self.item_confidence = confidence, item_confidence
        item_counts = np.diff(item_confidence.indptr)
        self.item_reg = (config.regularization * (1.0 + item_counts) ** config.frequency_exponent).astype(
            np.float32
        )
        self._stack = contextlib.ExitStack()
        self.ray: ModuleType | None = None
        self.workers: list[Any] = []
        self.ranges: dict[str, list[tuple[int, int]]] = {}

    def __enter__(self) -> Self:
        ray = self.ray = self._stack.enter_context(ray_session(self.engine))
        try:
            count = worker_count(ray, self.engine)
            matrices = {"users": self.confidence, "items": self.item_confidence}
            self.ranges = {side: row_ranges(np.diff(m.indptr), count) for side, m in matrices.items()}
            # One TensorFlow thread per worker: each holds one CPU of the cluster.
            actor = ray.remote(num_cpus=1, runtime_env={"env_vars": {"RECSYS_TF_THREADS": "1"}})(ShardWorker)
            config = self.model.config.model_dump()
            self.workers = [
                actor.remote(
                    config,
                    self.confidence[slice(*self.ranges["users"][i])],
                    self.item_confidence[slice(*self.ranges["items"][i])],
                )
                for i in range(count)
            ]
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.ray is not None
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []
        self._stack.close()

    def _half_step(self, side: str, own: np.ndarray, other: np.ndarray) -> np.ndarray:
        assert self.ray is not None
        ray = self.ray
        other_ref = ray.put(other)  # broadcast: every worker reads the one copy
        gram_ref = ray.put(other.T @ other)
        pending = [
            worker.solve.remote(side, other_ref, gram_ref, own[start:stop])
            for worker, (start, stop) in zip(self.workers, self.ranges[side], strict=True)
        ]
        return np.concatenate(ray.get(pending)).astype(np.float32, copy=False)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        assert self.ray is not None
        self.users = self._half_step("users", self.users, self.items)
        self.items = self._half_step("items", self.items, self.users)
        items_ref = self.ray.put(self.items)
        terms = self.ray.get(
            [
                worker.loss_terms.remote(self.users[start:stop], items_ref)
                for worker, (start, stop) in zip(self.workers, self.ranges["users"], strict=True)
            ]
        )
        item_norms = np.einsum("if,if->i", self.items, self.items, dtype=np.float64)
        total = sum(term for term, _ in terms) + float(self.item_reg @ item_norms)
        return {"loss": total / sum(confidence for _, confidence in terms)}
