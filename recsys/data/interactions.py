"""The explicit data objects every stage passes around: id maps and an interaction log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.errors import DataError


@dataclass(frozen=True)
class IdMap:
    """Maps dense internal indices ``0..n-1`` to external string ids and back.

    Indices are stable: the builder orders ids by their database key, so new ids append and
    old ids keep their index (warm starts rely on this).
    """

    external_ids: np.ndarray  # dtype object (str); position = internal index
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.external_ids, dtype=object)
        object.__setattr__(self, "external_ids", ids)
        lookup = {str(external): index for index, external in enumerate(ids)}
        if len(lookup) != len(ids):
            raise DataError(f"id map has {len(ids) - len(lookup)} duplicate external ids")
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.external_ids)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._lookup

    def index(self, external_id: str) -> int | None:
        """The internal index of one external id, or None when unknown."""
        return self._lookup.get(str(external_id))

    def indices(self, external_ids: Iterable[str]) -> np.ndarray:
        """Internal indices of many external ids; unknown ids map to -1."""
        return np.fromiter((self._lookup.get(str(e), -1) for e in external_ids), dtype=np.int64)

    def to_list(self) -> list[str]:
        return [str(e) for e in self.external_ids]


@dataclass(frozen=True)
class Interactions:
    """A user x item interaction log in coordinate form, with the id maps that name its rows.

    One entry per (user, item) pair once built by :func:`recsys.data.matrix.build_interactions`
    (repeated events already combined), so ``to_csr`` is exact.
    """

    users: IdMap
    items: IdMap
    user_index: np.ndarray  # int32, one per interaction
    item_index: np.ndarray  # int32
    values: np.ndarray  # float32
    timestamps: np.ndarray  # int64 epoch seconds

    def __post_init__(self) -> None:
        n = len(self.user_index)
        for name in ("item_index", "values", "timestamps"):
            if len(getattr(self, name)) != n:
                raise DataError(
                    f"Interactions.{name} has {len(getattr(self, name))} entries, user_index has {n}"
                )
        if n and (self.user_index.max() >= len(self.users) or self.item_index.max() >= len(self.items)):
            raise DataError("Interactions index an id outside the id maps")

    def __len__(self) -> int:
        return len(self.user_index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.users), len(self.items)

    def to_csr(self) -> sp.csr_matrix:
        """The users x items matrix of values (float32)."""
        matrix = sp.csr_matrix(
            (self.values.astype(np.float32), (self.user_index, self.item_index)),
            shape=self.shape,
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        return matrix

    def subset(self, mask: np.ndarray) -> Interactions:
        """The interactions where ``mask`` is true, with the same id maps."""
        return Interactions(
            users=self.users,
            items=self.items,
            user_index=self.user_index[mask],
            item_index=self.item_index[mask],
            values=self.values[mask],
            timestamps=self.timestamps[mask],
        )

    @classmethod
    def from_arrays(
        cls,
        user_ids: Iterable[object],
        item_ids: Iterable[object],
        values: Iterable[float] | None = None,
        timestamps: Iterable[int] | None = None,
    ) -> Interactions:
        """Build from parallel arrays of external ids (ids are indexed in order of first sight)."""
        users_raw = np.asarray([str(u) for u in user_ids], dtype=object)
        items_raw = np.asarray([str(i) for i in item_ids], dtype=object)
        user_keys, user_first, user_index = np.unique(users_raw, return_index=True, return_inverse=True)
        item_keys, item_first, item_index = np.unique(items_raw, return_index=True, return_inverse=True)
        # Re-number by first appearance so small hand-written examples keep their natural order.
        user_order = np.argsort(user_first, kind="stable")
        item_order = np.argsort(item_first, kind="stable")
        user_rank = np.empty_like(user_order)
        user_rank[user_order] = np.arange(len(user_order))
        item_rank = np.empty_like(item_order)
        item_rank[item_order] = np.arange(len(item_order))
        n = len(users_raw)
        vals = np.ones(n, np.float32) if values is None else np.asarray(list(values), np.float32)
        ts = np.zeros(n, np.int64) if timestamps is None else np.asarray(list(timestamps), np.int64)
        return cls(
            users=IdMap(user_keys[user_order]),
            items=IdMap(item_keys[item_order]),
            user_index=user_rank[user_index].astype(np.int32),
            item_index=item_rank[item_index].astype(np.int32),
            values=vals,
            timestamps=ts,
        )
