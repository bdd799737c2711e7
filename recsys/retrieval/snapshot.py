"""A version's seen-items snapshot: the interaction log up to one interaction id, in the version's
index space, saved with the version as files that every service worker memory-maps.

What a retriever needs from the log is its history matrix (users x items, one stored value per
pair, every kind, the newest value of a repeated pair), which users to fold in (those with an
interaction newer than the version's watermark) and the users the database has beyond the
model's. Reading and combining the whole log is what made a service start slow at scale (34 s
and 946 MB per worker at 5M interactions), so the registry writes it once, when a version is
registered, into ``seen/``::

    indptr.npy        int32 (rows + 1)  CSR row pointers (int64 beyond 2**31 entries)
    indices.npy       int32 (nnz)       item index of each entry, sorted within its row
    data.npy          float32 (nnz)     the stored value (combined: newest wins)
    fold.npy          bool (rows)       users with an interaction newer than the watermark
    extra_users.npy   str (extra)       users of the database the model does not know (rows
                                        after the model's users, in database order)
    snapshot.json     format, the last interaction id and the last deletion id it covers, shapes

Rows are the model's users in the order of its id map, then ``extra_users``; columns are the
model's items. A worker maps the ``.npy`` files read-only (``np.load(mmap_mode="r")``), so the
operating system keeps one copy of their pages for every worker, and reads from the database
only the interactions stored after ``last_interaction_id`` (into the retriever's overlay) and
the erasures recorded after ``last_deletion_id``.

:func:`snapshot_from_database` computes the same snapshot from the database: the registry calls
it at registration, and the loader calls it for versions registered before snapshots existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import func, select

from recsys.data.interactions import IdMap, Interactions
from recsys.db.models import Deletion, Interaction
from recsys.errors import ArtifactError
from recsys.retrieval.retriever import align_to_model, changed_since

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Sub-folder of a version holding its snapshot.
SEEN_DIR = "seen"
SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_FORMAT = 1
#: The arrays of a snapshot, their file names and dtypes.
ARRAYS: dict[str, tuple[np.dtype[Any], ...]] = {
    # int32 row pointers while the entries fit (scipy would copy int64 ones down to int32)
    "indptr": (np.dtype(np.int32), np.dtype(np.int64)),
    "indices": (np.dtype(np.int32),),
    "data": (np.dtype(np.float32),),
    "fold": (np.dtype(bool),),
}
EXTRA_USERS_FILE = "extra_users.npy"


@dataclass(frozen=True)
class LogMarks:
    """Where a read of the log starts from: the newest interaction and deletion ids before it.

    Read before the interactions, so that events stored during the read are read again after
    it (applying one twice is harmless: the newest value wins) and erasures recorded during
    the read are applied again (forgetting twice is harmless too)."""

    interaction_id: int
    deletion_id: int

    @classmethod
    def read(cls, engine: Engine) -> LogMarks:
        with engine.connect() as connection:
            interaction = connection.scalar(select(func.coalesce(func.max(Interaction.id), 0)))
            deletion = connection.scalar(select(func.coalesce(func.max(Deletion.id), 0)))
        return cls(int(interaction or 0), int(deletion or 0))


@dataclass(frozen=True)
class SeenSnapshot:
    """The log up to ``marks`` in a version's index space (module docstring)."""

    users: IdMap
    """Rows: the model's users, then the database's other users at the snapshot."""
    seen: sp.csr_matrix
    """Users x items, the stored value of each pair (memory-mapped when loaded from files)."""
    fold: np.ndarray
    """Per row, whether the user has an interaction newer than the version's watermark."""
    marks: LogMarks
    source: str
    """Where it came from: ``"files"`` (the version's ``seen/``) or ``"database"``."""

    @classmethod
    def from_interactions(
        cls, data: Interactions, users: IdMap, items: IdMap, watermark: int | None, marks: LogMarks
    ) -> SeenSnapshot:
        """The snapshot of ``data`` (the log as :func:`build_interactions` combines it, read
        after ``marks``) for a version with the given id maps and watermark."""
        all_users, seen = align_to_model(data, users, items)
        return cls(
            users=all_users,
            seen=seen,
            fold=changed_since(data, users, items, watermark),
            marks=marks,
            source="database",
        )

    def save(self, folder: Path, n_model_users: int) -> None:
        """Write the snapshot's files into ``folder`` (the version's ``seen/`` being built)."""
        folder.mkdir(parents=True, exist_ok=True)
        seen = self.seen
        arrays = {"indptr": seen.indptr, "indices": seen.indices, "data": seen.data, "fold": self.fold}
        for name, dtypes in ARRAYS.items():
            dtype = dtypes[0] if name != "indptr" or seen.nnz < 2**31 else dtypes[1]
            np.save(folder / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=dtype))
        extra = self.users.to_list()[n_model_users:]
        np.save(folder / EXTRA_USERS_FILE, np.asarray(extra, dtype=str), allow_pickle=False)
        meta = {
            "format": SNAPSHOT_FORMAT,
            "last_interaction_id": self.marks.interaction_id,
            "last_deletion_id": self.marks.deletion_id,
            "rows": seen.shape[0],
            "items": seen.shape[1],
            "entries": int(seen.nnz),
        }
        (folder / SNAPSHOT_FILE).write_text(json.dumps(meta, indent=2))


def snapshot_from_database(engine: Engine, users: IdMap, items: IdMap, watermark: int | None) -> SeenSnapshot:
    """The snapshot of the database's whole log now, for a version with these id maps."""
    from recsys.data.matrix import build_interactions

    marks = LogMarks.read(engine)
    return SeenSnapshot.from_interactions(build_interactions(engine), users, items, watermark, marks)


def has_snapshot(version_dir: Path) -> bool:
    return (version_dir / SEEN_DIR / SNAPSHOT_FILE).is_file()


def load_snapshot(version_dir: Path, users: IdMap, items: IdMap) -> SeenSnapshot:
    """Map the snapshot saved with the version at ``version_dir`` (read-only, shared pages).

    The registry has verified the files' checksums; this checks that they fit together and fit
    the version's id maps, and raises :class:`ArtifactError` naming the file that does not."""
    folder = version_dir / SEEN_DIR
    meta_path = folder / SNAPSHOT_FILE
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{meta_path} cannot be read: {exc}") from None
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ArtifactError(
            f"{meta_path} has format {meta.get('format')!r}; this recsys reads format {SNAPSHOT_FORMAT}"
        )
    arrays = {name: _map(folder / f"{name}.npy", dtypes) for name, dtypes in ARRAYS.items()}
    extra_path = folder / EXTRA_USERS_FILE
    try:
        extra = np.load(extra_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{extra_path} cannot be read: {exc}") from None
    rows, n_items = len(users) + len(extra), len(items)
    indptr, indices = arrays["indptr"], arrays["indices"]
    expected = {
        "indptr": rows + 1,
        "indices": int(indptr[-1]) if len(indptr) else -1,
        "data": int(indptr[-1]) if len(indptr) else -1,
        "fold": rows,
    }
    for name, length in expected.items():
        if arrays[name].shape != (length,):
            raise ArtifactError(
                f"{folder / f'{name}.npy'} holds {arrays[name].shape[0]} entries where the version's "
                f"{len(users)} users, {len(extra)} extra users and {n_items} items need {length}"
            )
    if meta.get("rows") != rows or meta.get("items") != n_items:
        raise ArtifactError(
            f"{meta_path} describes {meta.get('rows')} x {meta.get('items')}, the version's id maps "
            f"{rows} x {n_items}"
        )
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
        raise ArtifactError(f"{folder / 'indices.npy'} names items outside the version's {n_items}")
    seen = sp.csr_matrix((arrays["data"], indices, indptr), shape=(rows, n_items))
    all_users = users if not len(extra) else IdMap(np.concatenate([users.external_ids, extra.astype(object)]))
    marks = LogMarks(int(meta["last_interaction_id"]), int(meta["last_deletion_id"]))
    return SeenSnapshot(users=all_users, seen=seen, fold=arrays["fold"], marks=marks, source="files")


def _map(path: Path, dtypes: tuple[np.dtype[Any], ...]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from None
    if array.dtype not in dtypes or array.ndim != 1:
        raise ArtifactError(
            f"{path} holds {array.dtype} of shape {array.shape}, expected one row of {dtypes[0]}"
        )
    return array
