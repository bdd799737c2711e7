"""Readers for the original MovieLens files, shared by ingestion and the benchmark.

Each variant has its own layout: ml-100k (``u.data`` tab-separated, ``u.item`` in latin-1 with 19
genre flags, ``u.user``), ml-1m (``::``-separated ``.dat`` files in latin-1, coded occupations),
and ml-latest-small / ml-20m / ml-25m (``ratings.csv`` and ``movies.csv`` in UTF-8, no users).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import DataError

MOVIELENS_VARIANTS = ("ml-100k", "ml-latest-small", "ml-1m", "ml-20m", "ml-25m")
RATING_RANGE = (0.5, 5.0)  # every variant rates on 0.5..5 (ml-100k and ml-1m use whole stars only)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
# ml-1m README: users.dat codes occupations 0..20 in this order.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class MovieLens:
    """One variant's tables.

    ``ratings``: user_id, item_id (int64), rating (float32), timestamp (int64 epoch seconds).
    ``items``: item_id, title, genres (list of str), plus variant-specific columns.
    ``users``: user_id, age, gender, occupation, zip_code; None where the variant has no users file.
    """

    variant: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None


def _require(data_dir: Path, *names: str) -> list[Path]:
    paths = [data_dir / name for name in names]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"{data_dir} lacks {', '.join(missing)}; point --data-dir at the folder extracted from the "
            "MovieLens zip, or omit it to download the variant"
        )
    return paths


def read_movielens(variant: str, data_dir: str | Path) -> MovieLens:
    """Read the original files of ``variant`` from ``data_dir`` (the extracted zip folder)."""
    data_dir = Path(data_dir)
    if variant not in MOVIELENS_VARIANTS:
        raise DataError(
            f"unknown MovieLens variant {variant!r}; choose one of {', '.join(MOVIELENS_VARIANTS)}"
        )
    if variant == "ml-100k":
        return _read_100k(data_dir)
    if variant == "ml-1m":
        return _read_1m(data_dir)
    return _read_csv_variant(variant, data_dir)


def _ratings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"})


def _read_100k(data_dir: Path) -> MovieLens:
    ratings_path, items_path, users_path = _require(data_dir, "u.data", "u.item", "u.user")
    ratings = pd.read_csv(
        ratings_path, sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"]
    )
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES]
    items = pd.read_csv(
        items_path, sep="|", header=None, names=item_columns, encoding="latin-1", dtype={"title": str}
    )
    flags = items[list(ML100K_GENRES)].to_numpy(dtype=bool)
    names = np.asarray(ML100K_GENRES, dtype=object)
    genres = pd.Series([list(names[row]) for row in flags], dtype=object)
    items = items[["item_id", "title", "release_date", "imdb_url"]].assign(genres=genres)
    users = pd.read_csv(
        users_path,
        sep="|",
        header=None,
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype={"zip_code": str},
    )
    return MovieLens("ml-100k", _ratings(ratings), _items(items), users)


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # "::" is a two-character separator, which only pandas' slow Python engine accepts; reading
    # ":"-separated with the C engine and keeping every other field is equivalent where no value
    # contains ":" (ratings and users; titles do, so movies.dat goes through _read_movies_dat).
    frame = pd.read_csv(
        path, sep=":", header=None, usecols=list(range(0, 2 * len(names), 2)), encoding="latin-1", dtype=str
    )
    frame.columns = names
    return frame


def _read_1m(data_dir: Path) -> MovieLens:
    ratings_path, items_path, users_path = _require(data_dir, "ratings.dat", "movies.dat", "users.dat")
    ratings = _read_dat(ratings_path, ["user_id", "item_id", "rating", "timestamp"])
    lines = items_path.read_text(encoding="latin-1").splitlines()
    fields = pd.Series([line for line in lines if line]).str.split("::", n=2, expand=True)
    items = pd.DataFrame({"item_id": fields[0].astype("int64"), "title": fields[1], "genres": fields[2]})
    users = _read_dat(users_path, ["user_id", "gender", "age", "occupation", "zip_code"])
    occupation = users["occupation"].astype(int)
    users = pd.DataFrame(
        {
            "user_id": users["user_id"].astype("int64"),
            "age": users["age"].astype("int64"),  # the lower bound of the age bucket (1 = under 18)
            "gender": users["gender"],
            "occupation": np.asarray(ML1M_OCCUPATIONS, dtype=object)[occupation.to_numpy()],
            "zip_code": users["zip_code"],
        }
    )
    return MovieLens("ml-1m", _ratings(ratings), _items(_split_genres(items)), users)


def _read_csv_variant(variant: str, data_dir: Path) -> MovieLens:
    ratings_path, items_path = _require(data_dir, "ratings.csv", "movies.csv")
    ratings = pd.read_csv(
        ratings_path,
        dtype={"userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"},
        engine="pyarrow",
    ).rename(columns={"userId": "user_id", "movieId": "item_id"})
    items = pd.read_csv(
        items_path, dtype={"movieId": "int64", "title": "str", "genres": "str"}, encoding="utf-8"
    )
    items = items.rename(columns={"movieId": "item_id"})
    return MovieLens(variant, _ratings(ratings), _items(_split_genres(items)), None)


def _split_genres(items: pd.DataFrame) -> pd.DataFrame:
    genres = items["genres"].fillna("").replace(NO_GENRES, "").str.split("|", regex=False)
    return items.assign(genres=genres.map(lambda names: [name for name in names if name]))


def _items(items: pd.DataFrame) -> pd.DataFrame:
    first = ["item_id", "title", "genres"]
    return items[first + [column for column in items.columns if column not in first]].reset_index(drop=True)
