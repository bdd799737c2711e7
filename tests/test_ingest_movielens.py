"""MovieLens: readers for every layout, exact counts on both databases, download with checksum."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from recsys.data.movielens import read_movielens
from recsys.errors import DataError
from recsys.ingest import fetch_movielens, ingest_movielens
from recsys.ingest import movielens as movielens_module


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
            for table in ("users", "items", "interactions")
        )


def attributes(engine: Engine, table: str, external_id: str) -> tuple[str | None, dict[str, object]]:
    title = ", title" if table == "items" else ", NULL"
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT attributes{title} FROM {table} WHERE external_id = :id"), {"id": external_id}
        ).one()
    value = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return row[1], value


def test_read_ml100k_decodes_latin1_titles_genres_and_demographics(ml100k_dir: Path) -> None:
    data = read_movielens("ml-100k", ml100k_dir)
    assert data.users is not None
    assert (len(data.ratings), len(data.items), len(data.users)) == (100_000, 1_682, 943)
    titles = data.items.set_index("item_id")["title"]
    assert titles[543] == "Misérables, Les (1995)"
    assert data.items.set_index("item_id")["genres"][1] == ["Animation", "Children's", "Comedy"]
    assert data.users.iloc[0].to_dict() == {
        "user_id": 1, "age": 24, "gender": "M", "occupation": "technician", "zip_code": "85711"
    }  # fmt: skip
    assert (data.ratings["rating"].min(), data.ratings["rating"].max()) == (1.0, 5.0)


def test_ingest_ml100k_exact_counts(engine: Engine, ml100k_dir: Path) -> None:
    reports = ingest_movielens(engine, "ml-100k", data_dir=ml100k_dir)
    assert [(r.target, r.rows_loaded, r.rows_rejected) for r in reports] == [
        ("items", 1_682, 0),
        ("users", 943, 0),
        ("interactions", 100_000, 0),
    ]
    assert counts(engine) == (943, 1_682, 100_000)
    title, item = attributes(engine, "items", "1104")
    assert title == "C'est arrivé près de chez vous (1992)"
    assert item["genres"] == ["Comedy", "Crime", "Drama"]
    assert attributes(engine, "users", "1")[1] == {
        "age": 24, "gender": "M", "occupation": "technician", "zip_code": "85711"
    }  # fmt: skip


def test_ingest_ml_latest_small_exact_counts(engine: Engine, ml_latest_small_dir: Path) -> None:
    reports = ingest_movielens(engine, "ml-latest-small", data_dir=ml_latest_small_dir)
    assert [r.target for r in reports] == ["items", "interactions"]  # no users file in this variant
    # 9,742 movies in movies.csv, of which 9,724 are rated; every one of them is an item.
    assert counts(engine) == (610, 9_742, 100_836)
    title, item = attributes(engine, "items", "1")
    assert (title, item["genres"]) == (
        "Toy Story (1995)",
        ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
    )
    with engine.connect() as connection:
        low, high = connection.execute(text("SELECT MIN(value), MAX(value) FROM interactions")).one()
    assert (low, high) == (0.5, 5.0)


def test_read_ml1m_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n2::1::3::978300761\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "1::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "7::Amélie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = read_movielens("ml-1m", folder)
    assert data.ratings.to_dict("list") == {
        "user_id": [1, 2], "item_id": [1193, 1], "rating": [5.0, 3.0], "timestamp": [978300760, 978300761]
    }  # fmt: skip
    items = data.items.set_index("item_id")
    assert items.loc[1, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[1, "genres"] == ["Action", "Sci-Fi"]
    assert items.loc[7, "title"] == "Amélie (2001)"
    assert data.users is not None
    assert data.users[["user_id", "age", "gender", "occupation"]].values.tolist() == [
        [1, 1, "F", "K-12 student"],
        [2, 56, "M", "self-employed"],
    ]


def test_reader_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"lacks u.data, u.item, u.user; point --data-dir"):
        read_movielens("ml-100k", tmp_path)
    with pytest.raises(DataError, match="unknown MovieLens variant 'ml-5m'"):
        read_movielens("ml-5m", tmp_path)


def make_zip(folder: Path, variant: str, files: dict[str, str]) -> Path:
    """A zip laid out like GroupLens's: every file under a top folder named after the variant."""
    archive = folder / f"{variant}.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(f"{variant}/{name}", content)
    return archive


SMALL = {
    "ratings.csv": "userId,movieId,rating,timestamp\n"
    "1,1,4.0,964982703\n1,2,3.5,964982704\n2,1,0.5,964982705\n",
    "movies.csv": "movieId,title,genres\n"
    '1,Toy Story (1995),Animation|Comedy\n2,"Heat, The (1995)",(no genres listed)\n',
}


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local folder standing in for files.grouplens.org, reached through a file:// URL."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    monkeypatch.setattr(movielens_module, "MOVIELENS_BASE_URL", folder.as_uri())
    return folder


def test_download_verifies_published_md5_extracts_and_ingests(
    engine: Engine, mirror: Path, tmp_path: Path
) -> None:
    archive = make_zip(mirror, "ml-latest-small", SMALL)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    (mirror / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {digest}\n")
    cache = tmp_path / "cache"

    reports = ingest_movielens(engine, "ml-latest-small", cache_dir=cache)
    assert [r.rows_loaded for r in reports] == [2, 3]
    assert counts(engine) == (2, 2, 3)
    assert attributes(engine, "items", "2") == ("Heat, The (1995)", {"genres": []})
    extracted = cache / "movielens" / "ml-latest-small"
    assert sorted(p.name for p in extracted.iterdir()) == ["movies.csv", "ratings.csv"]
    # No temporary folders are left next to it, and the next call needs no network.
    assert sorted(p.name for p in (cache / "movielens").iterdir()) == [
        "ml-latest-small",
        "ml-latest-small.zip",
    ]
    archive.unlink()
    assert fetch_movielens("ml-latest-small", cache) == extracted


def test_checksum_mismatch_deletes_the_download_and_extracts_nothing(mirror: Path, tmp_path: Path) -> None:
    make_zip(mirror, "ml-100k", {"u.data": "1\t1\t5\t1\n"})  # not the real zip: its MD5 differs
    cache = tmp_path / "cache"
    expected = movielens_module.KNOWN_MD5["ml-100k"]
    with pytest.raises(
        DataError, match=rf"has MD5 [0-9a-f]{{32}}, expected {expected}; the download is corrupt"
    ):
        fetch_movielens("ml-100k", cache)
    assert list((cache / "movielens").iterdir()) == []


def test_download_failure_is_a_clear_error(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"could not download .*ml-1m.zip.*pass --data-dir"):
        fetch_movielens("ml-1m", tmp_path / "cache")
    assert list((tmp_path / "cache" / "movielens").iterdir()) == []
