"""MovieLens: download, verify and extract the official zips, then ingest items, users and ratings."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from sqlalchemy import Engine

from recsys.data.movielens import MOVIELENS_VARIANTS, RATING_RANGE, read_movielens
from recsys.errors import DataError
from recsys.ingest.pipeline import ingest_frame
from recsys.ingest.specs import CsvSpec, IngestReport, ItemSpec, UserSpec
from recsys.settings import get_settings

# The dataset's origin, part of its definition like the digests below (tests point it elsewhere).
MOVIELENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"

# MD5 digests of the frozen releases, as GroupLens publishes them in <zip>.md5 next to each zip.
# ml-latest-small is re-released in place, so no digest can be pinned: its zip is checked against
# the .md5 file downloaded alongside it (which guards against a truncated or corrupt download,
# not against a compromised server).
KNOWN_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}
CHUNK_BYTES = 1 << 20

__all__ = ["MOVIELENS_VARIANTS", "fetch_movielens", "ingest_movielens"]


def _check_variant(variant: str) -> None:
    if variant not in MOVIELENS_VARIANTS:
        raise DataError(
            f"unknown MovieLens variant {variant!r}; choose one of {', '.join(MOVIELENS_VARIANTS)}"
        )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, destination: Path) -> None:
    """Stream ``url`` into ``destination`` through a temporary file, so no partial file remains."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, CHUNK_BYTES)
        os.replace(temporary, destination)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {exc}; check the connection or pass --data-dir") from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _expected_md5(variant: str, url: str) -> str:
    if variant in KNOWN_MD5:
        return KNOWN_MD5[variant]
    try:
        with urllib.request.urlopen(f"{url}.md5", timeout=60) as response:
            published = response.read().decode("ascii", errors="replace")
    except OSError as exc:
        raise DataError(f"could not download the checksum {url}.md5: {exc}") from exc
    match = re.search(r"\b[0-9a-fA-F]{32}\b", published)
    if match is None:
        raise DataError(f"{url}.md5 holds no MD5 digest: {published[:100]!r}")
    return match.group(0).lower()


def fetch_movielens(variant: str, cache_dir: str | Path | None = None) -> Path:
    """The folder of ``variant``'s extracted files, downloading and verifying the zip if needed.

    The zip is kept in ``<cache_dir>/movielens``; extraction goes to a temporary folder renamed
    into place, so a present ``<cache_dir>/movielens/<variant>`` is always complete.
    """
    _check_variant(variant)
    root = Path(cache_dir) if cache_dir is not None else get_settings().downloads
    root = root / "movielens"
    target = root / variant
    if target.is_dir():
        return target
    url = f"{MOVIELENS_BASE_URL}/{variant}.zip"
    archive = root / f"{variant}.zip"
    expected = _expected_md5(variant, url)
    if not archive.is_file() or _md5(archive) != expected:
        _download(url, archive)
    actual = _md5(archive)
    if actual != expected:
        archive.unlink()
        raise DataError(
            f"{url} has MD5 {actual}, expected {expected}; the download is corrupt or was changed "
            "upstream. It was deleted: run the command again, or pass --data-dir with the files"
        )
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{variant}-"))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)  # zipfile drops absolute paths and ".." parts
        inner = staging / variant
        if not inner.is_dir():
            raise DataError(f"{archive} does not contain the folder {variant}/")
        try:
            os.replace(inner, target)
        except OSError:
            if not target.is_dir():  # another process may have won the race with the same files
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ingest_movielens(
    engine: Engine,
    variant: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[IngestReport]:
    """Load a MovieLens variant: items (titles, genres), users (demographics, where present), ratings.

    With ``data_dir`` the original files are read from there; otherwise the official zip is
    downloaded into ``cache_dir`` (default: the settings' download cache) and verified.
    """
    _check_variant(variant)
    folder = Path(data_dir) if data_dir is not None else fetch_movielens(variant, cache_dir)
    data = read_movielens(variant, folder)
    reports = [
        ingest_frame(
            engine,
            data.items,
            spec=ItemSpec(id_col="item_id", title_col="title", genres_col="genres"),
            source=f"{variant}:items",
            progress=progress,
        )
    ]
    if data.users is not None:
        users_report = ingest_frame(
            engine, data.users, spec=UserSpec(id_col="user_id"), source=f"{variant}:users", progress=progress
        )
        reports.append(users_report)
    ratings_spec = CsvSpec(
        user_col="user_id",
        item_col="item_id",
        value_col="rating",
        timestamp_col="timestamp",
        kind="rating",
        min_value=RATING_RANGE[0],
        max_value=RATING_RANGE[1],
    )
    reports.append(
        ingest_frame(engine, data.ratings, spec=ratings_spec, source=f"{variant}:ratings", progress=progress)
    )
    return reports
