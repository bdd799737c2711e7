"""Version folders on disk: their layout, atomic publishing, checksums and leftovers.

A version folder ``<artifact_dir>/<version>/`` holds::

    model/             the model as written by Recommender.save (config JSON, numpy vectors)
    id_maps.npz        external user and item ids (string arrays, no pickle), position = index
    version.json       model, params, watermark, data fingerprint, metrics, library versions
    seen/              the seen-items snapshot services memory-map (recsys.retrieval.snapshot);
                       versions registered before it existed have none
    tensorboard/       training logs (when the model wrote any)
    index/ ...         sub-folders attached later (for example the FAISS index)
    checksums.sha256   SHA-256 of every other file, in ``sha256sum`` format
    .verified.json     the files' size, times and inode when they were last hashed in full
                       (not a file of the version, not in its checksums: see :func:`verify`)

Writes are atomic: a folder is built under a hidden temporary name (``.tmp-*``) next to its final
place, fsynced and renamed into place. A process killed half-way leaves a hidden folder at most,
never a half-written version; :func:`abandoned_paths` finds those leftovers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path

import numpy as np

from recsys.data.interactions import IdMap
from recsys.errors import ArtifactError, RegistryError

MODEL_DIR = "model"
ID_MAPS_FILE = "id_maps.npz"
VERSION_FILE = "version.json"
CHECKSUMS_FILE = "checksums.sha256"
#: The record of a version's last full verification (hidden, not listed in its checksums).
VERIFIED_FILE = ".verified.json"
VERIFIED_FORMAT = 1
#: A file changed this recently (nanoseconds) when it was hashed is not recorded as verified:
#: file times tick coarsely (1 s on some file systems), so a write right after the hashing could
#: leave them as they were.
RECENT_NS = 2_000_000_000
#: Files every complete version has (besides the model folder's own files).
REQUIRED_FILES = (VERSION_FILE, ID_MAPS_FILE)
#: Scratch folders of versions being trained (TensorBoard logs go here first).
WORK_DIR = ".work"
#: Per-run training checkpoints (kept for --resume, not a version).
CHECKPOINTS_DIR = "checkpoints"
#: Prefixes of what an interrupted write leaves: folders being built, folders being replaced.
TEMPORARY_PREFIXES = (".tmp-", ".old-")

#: Libraries whose versions are recorded with each version (read from package metadata, so
#: recording them imports nothing).
RECORDED_LIBRARIES = (
    "recsys",
    "numpy",
    "scipy",
    "tensorflow",
    "tf-keras",
    "tensorflow-recommenders",
    "faiss-cpu",
    "faiss-gpu",
    "implicit",
)


def publish(final: Path, write: Callable[[Path], None]) -> Path:
    """Create folder ``final`` atomically: ``write(folder)`` fills a hidden temporary folder,
    which gets its checksum file, is fsynced and is renamed to ``final``."""
    if final.exists():
        raise RegistryError(f"version folder {final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.parent / f".tmp-{final.name}"
    try:
        temp.mkdir()
        write(temp)
        _write_checksums(temp, compute_checksums(temp))
        _fsync_tree(temp)
        os.replace(temp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def attach(root: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Add (or replace) sub-folder ``name`` of the version at ``root``, e.g. its FAISS ``index/``.

    ``write(folder)`` fills a temporary folder that is fsynced and renamed into place; the
    checksum file is then rewritten atomically to cover the new files.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == MODEL_DIR:
        raise RegistryError(f"cannot attach {name!r}: use a plain folder name other than {MODEL_DIR!r}")
    final = root / name
    if final.exists() and not final.is_dir():
        raise RegistryError(f"{final} exists and is not a folder")
    temp = root / f".tmp-{name}-{secrets.token_hex(3)}"
    temp.mkdir()
    try:
        write(temp)
        _fsync_tree(temp)
        added = {f"{name}/{rel}": digest for rel, digest in compute_checksums(temp).items()}
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    checksums = {
        rel: digest for rel, digest in read_checksums(root).items() if not rel.startswith(f"{name}/")
    }
    old = root / f".old-{name}-{secrets.token_hex(3)}"
    if final.exists():
        os.replace(final, old)
    os.replace(temp, final)
    _write_checksums(root, {**checksums, **added})
    _fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return final


def abandoned_paths(artifact_dir: Path, registered: Iterable[str], older_than: float) -> list[Path]:
    """What killed processes left under ``artifact_dir``, last modified before ``older_than``
    (epoch seconds; younger ones may belong to a write in progress):

    - hidden temporary folders and files (``.tmp-*``, ``.old-*``) at the top and inside versions
      (an index build killed half-way leaves ``<version>/.tmp-index-*``),
    - scratch folders of trainings under ``.work/``,
    - version folders without a database row (``registered`` lists the rows).
    """
    if not artifact_dir.is_dir():
        return []
    known = set(registered)
    work = artifact_dir / WORK_DIR
    versions = [
        path
        for path in artifact_dir.iterdir()
        if path.is_dir() and not path.name.startswith(".") and path.name != CHECKPOINTS_DIR
    ]
    found = [
        *_temporary_entries(artifact_dir),
        *(work.iterdir() if work.is_dir() else []),
        *(path for path in versions if (path / VERSION_FILE).exists() and path.name not in known),
        *(entry for path in versions if path.name in known for entry in _temporary_entries(path)),
    ]
    return [path for path in found if path.lstat().st_mtime < older_than]


def remove(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _temporary_entries(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.iterdir()
        if path.name.startswith(TEMPORARY_PREFIXES) or path.name == f".{CHECKSUMS_FILE}.tmp"
    ]


# --- id maps and checksums -------------------------------------------------------------------


def save_id_maps(path: Path, users: IdMap, items: IdMap) -> None:
    # Fixed-width unicode arrays load without pickle (allow_pickle stays False).
    np.savez(path, users=np.asarray(users.to_list(), dtype=str), items=np.asarray(items.to_list(), dtype=str))


def load_id_maps(path: Path) -> tuple[IdMap, IdMap]:
    with np.load(path, allow_pickle=False) as stored:
        return IdMap(stored["users"].astype(object)), IdMap(stored["items"].astype(object))


def compute_checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative POSIX path -> hex digest)."""
    return {
        path.relative_to(root).as_posix(): _sha256(path)
        for path in sorted(_files(root))
        if path.relative_to(root).as_posix() != CHECKSUMS_FILE
    }


def read_checksums(root: Path) -> dict[str, str]:
    checksum_file = root / CHECKSUMS_FILE
    if not checksum_file.is_file():
        raise ArtifactError(f"{checksum_file} is missing: the version at {root} is incomplete")
    checksums = {}
    for number, line in enumerate(checksum_file.read_text().splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ArtifactError(f"{checksum_file} line {number} is malformed: {line!r}")
        checksums[rel] = digest
    return checksums


def verify(root: Path, *, reuse: bool = False) -> None:
    """Raise ArtifactError naming the first missing or corrupt file of the version at ``root``.

    Every listed file is hashed and compared with its checksum; the files' size, modification
    and change times and inode before the hashing are then recorded (``.verified.json``, best
    effort). With ``reuse``, a version whose files all still have the recorded ones (none was
    written, replaced or moved since) is not hashed again: a service worker that loads a
    verified version reads its files' status, not their hundreds of megabytes. Files changed
    less than :data:`RECENT_NS` before a verification are not recorded, so the load after a
    version was written or copied hashes it in full."""
    if not root.is_dir():
        raise ArtifactError(f"the version folder {root} is missing")
    checksums = read_checksums(root)
    listing = root / CHECKSUMS_FILE
    for required in REQUIRED_FILES:
        if required not in checksums:
            raise ArtifactError(f"{listing} does not list {required}: the version is incomplete")
    if not any(rel.startswith(f"{MODEL_DIR}/") for rel in checksums):
        raise ArtifactError(f"{listing} lists no {MODEL_DIR}/ files: the version is incomplete")
    if reuse and _unchanged_since_verified(root, checksums):
        return
    started = time.time_ns()
    status = {CHECKSUMS_FILE: _file_status(listing)}
    for rel, digest in checksums.items():
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the version is incomplete")
        status[rel] = _file_status(path)
        if _sha256(path) != digest:
            raise ArtifactError(f"{path} does not match its checksum: the file is corrupt")
    if all(changed < started - RECENT_NS for _, _, changed, _, _ in status.values()):
        _write_verified(root, status)


def _file_status(path: Path) -> list[int]:
    """What a write, a replacement, a move or a copy changes: size, times, inode and device."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _write_verified(root: Path, status: Mapping[str, list[int]]) -> None:
    try:
        temp = root / f".tmp-verified-{secrets.token_hex(3)}.json"
        temp.write_text(json.dumps({"format": VERIFIED_FORMAT, "files": status}))
        os.replace(temp, root / VERIFIED_FILE)
    except OSError:
        pass  # a folder the service may not write: every load hashes the files


def _unchanged_since_verified(root: Path, checksums: Mapping[str, str]) -> bool:
    """Whether the last full verification's record covers exactly the listed files (and the
    listing), each with the size, times and inode it has now."""
    try:
        record = json.loads((root / VERIFIED_FILE).read_text())
        files = record["files"] if record["format"] == VERIFIED_FORMAT else {}
        if set(files) != {*checksums, CHECKSUMS_FILE}:
            return False
        return all(_file_status(root / rel) == files[rel] for rel in files)
    except (OSError, ValueError, TypeError, KeyError):
        return False


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _files(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_checksums(root: Path, checksums: Mapping[str, str]) -> None:
    temp = root / f".{CHECKSUMS_FILE}.tmp"
    with temp.open("w") as handle:
        handle.writelines(f"{digest}  {rel}\n" for rel, digest in sorted(checksums.items()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, root / CHECKSUMS_FILE)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk before the rename publishes them."""
    for path in _files(root):
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
