"""Retrieval: the one object that turns a loaded version into top-k lists (see ``retriever``)."""

from recsys.retrieval.filters import Catalogue, UnknownGenreError
from recsys.retrieval.retriever import (
    STRATEGIES,
    Overlay,
    Ranked,
    Ranking,
    RankOptions,
    Retriever,
    Strategy,
    VectorCache,
    align_to_model,
    changed_since,
    normalised,
)

__all__ = [
    "STRATEGIES",
    "Catalogue",
    "Overlay",
    "RankOptions",
    "Ranked",
    "Ranking",
    "Retriever",
    "Strategy",
    "UnknownGenreError",
    "VectorCache",
    "align_to_model",
    "changed_since",
    "normalised",
]
