"""Item and user catalogues line up with matrix indices, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, insert

from recsys.data.catalog import item_catalog, user_catalog
from recsys.data.interactions import IdMap
from recsys.db.models import Item, User
from recsys.retrieval.filters import Catalogue


def test_item_catalog_is_aligned_to_the_id_map(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(Item),
            [
                {
                    "external_id": "1",
                    "title": "Toy Story (1995)",
                    "attributes": {"genres": ["Animation", "Comedy"]},
                },
                {"external_id": "2", "title": None, "attributes": {"year": 1995}},
                {"external_id": "3", "title": "Heat (1995)", "attributes": {"genres": "Action|Crime"}},
            ],
        )
    # A different order than the table, plus an id the table lacks.
    items = IdMap(np.array(["3", "missing", "1", "2"], dtype=object))
    catalog = item_catalog(engine, items)
    assert list(catalog.columns) == ["external_id", "title", "genres", "attributes"]
    assert catalog.index.tolist() == [0, 1, 2, 3]
    assert catalog["external_id"].tolist() == ["3", "missing", "1", "2"]
    assert catalog["title"].tolist() == ["Heat (1995)", None, "Toy Story (1995)", None]
    assert catalog["genres"].tolist() == [["Action", "Crime"], [], ["Animation", "Comedy"], []]
    assert catalog["attributes"].tolist() == [
        {"genres": "Action|Crime"},
        {},
        {"genres": ["Animation", "Comedy"]},
        {"year": 1995},
    ]


def test_user_catalog_is_aligned_to_the_id_map(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(User),
            [
                {"external_id": "a", "attributes": {"age": 24, "gender": "M"}},
                {"external_id": "b", "attributes": {}},
            ],
        )
    catalog = user_catalog(engine, IdMap(np.array(["b", "a", "c"], dtype=object)))
    assert list(catalog.columns) == ["external_id", "attributes"]
    assert catalog["external_id"].tolist() == ["b", "a", "c"]
    assert catalog["attributes"].tolist() == [{}, {"age": 24, "gender": "M"}, {}]


def test_empty_id_map_gives_an_empty_catalogue(engine: Engine) -> None:
    catalog = item_catalog(engine, IdMap(np.array([], dtype=object)))
    assert len(catalog) == 0
    assert list(catalog.columns) == ["external_id", "title", "genres", "attributes"]


def test_catalogue_genre_matrix_and_filters_follow_the_item_catalogue(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(Item),
            [
                {"external_id": "1", "title": "A", "attributes": {"genres": ["Drama", "Comédie"]}},
                {"external_id": "2", "title": "B", "attributes": {}},
                {"external_id": "3", "title": "C", "attributes": {"genres": "Drama|Action"}},
            ],
        )
    items = IdMap(np.array(["3", "missing", "1", "2"], dtype=object))
    catalogue = Catalogue.from_frame(len(items), item_catalog(engine, items))
    assert catalogue.genre_names == {"Action": 0, "Comédie": 1, "Drama": 2}
    assert catalogue.genre_matrix.toarray().tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert catalogue.titles.tolist() == ["C", None, "A", "B"]
    assert catalogue.filtered_out(["Drama"], []).tolist() == [1, 3]
    assert catalogue.filtered_out([], ["Comédie"]).tolist() == [2]
    assert catalogue.filtered_out(["Action", "Comédie"], ["Action"]).tolist() == [0, 1, 3]
    empty = Catalogue.from_frame(2, item_catalog(engine, IdMap(np.array(["2", "missing"], dtype=object))))
    assert empty.genre_matrix.shape == (2, 0) and empty.genre_names == {}
