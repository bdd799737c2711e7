"""Request and response bodies of the API (kept apart from the storage tables in recsys.db)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.retrieval import Strategy

#: Bounds of ``k`` for every endpoint that returns a list.
MAX_K = 1000
#: Largest ``offset`` (paging reaches the first MAX_OFFSET + MAX_K items).
MAX_OFFSET = 10_000
#: Most events one POST /interactions may carry.
MAX_EVENTS = 5000

ExternalId = Annotated[str, Field(min_length=1, max_length=255)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendedItem(Strict):
    item_id: str = Field(description="External item id.")
    title: str | None = Field(default=None, description="Title from the item catalogue.")
    genres: list[str] = Field(default_factory=list)
    score: float = Field(description="Inner product of user and item vectors (popularity count for popular).")


RecommendationId = Annotated[
    str,
    Field(
        description="Identifies this list: send it back as `recommendation_id` with feedback on its items.",
        examples=["3f2c9a7e0b6d4e1f8a5c2b9d7e4f1a03"],
    ),
]


class Recommendations(Strict):
    user_id: str | None = Field(description="The user asked for; null for an anonymous history.")
    items: list[RecommendedItem]
    model_version: str
    strategy: Strategy = Field(
        description="personalized: the user's trained vector; folded-in: a vector computed from the "
        "user's interactions (new feedback or a new user); popular: the fallback for users with none."
    )
    recommendation_id: RecommendationId


class SimilarItems(Strict):
    item_id: str
    items: list[RecommendedItem]
    model_version: str
    recommendation_id: RecommendationId


class ListQuery(Strict):
    """What every list endpoint takes: size, paging, genre filters and explicit exclusions
    (validated as one model: each separate parameter costs FastAPI time on the hottest endpoint)."""

    k: int = Field(default=10, ge=1, le=MAX_K, description="Number of items.", examples=[10])
    offset: int = Field(
        default=0,
        ge=0,
        le=MAX_OFFSET,
        description="Skip this many of the best items (paging: page n of size k is offset = n * k).",
        examples=[10],
    )
    include_genres: list[str] = Field(
        default_factory=list,
        description="Only items with one of these genres (repeat the parameter).",
        examples=[["Comedy", "Drama"]],
    )
    exclude_genres: list[str] = Field(
        default_factory=list,
        description="No items with any of these genres (repeat the parameter).",
        examples=[["Horror"]],
    )
    exclude_items: list[ExternalId] = Field(
        default_factory=list,
        max_length=MAX_K,
        description="Item ids never to return, for example those already on screen (repeat the "
        "parameter); ids the model does not know are ignored.",
        examples=[["50", "181"]],
    )


class RecommendationQuery(ListQuery):
    """Query parameters of a known user's recommendations."""

    exclude_seen: bool = Field(default=True, description="Leave out items the user interacted with.")


class SimilarQuery(ListQuery):
    """Query parameters of similar items."""


class HistoryRequest(Strict):
    """An anonymous user's history: recommendations are folded in from these items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": ["50", "181", "172"], "k": 5, "offset": 0, "exclude_items": ["100"]},
                {"items": ["1", "2"], "values": [5.0, 3.0], "include_genres": ["Comedy"]},
            ]
        },
    )

    items: list[ExternalId] = Field(min_length=1, max_length=MAX_K, description="External item ids.")
    values: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="One value (rating or strength) per item; default 1.0 each."
    )
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Skip this many of the best items.")
    exclude_seen: bool = Field(default=True, description="Leave the history's own items out.")
    include_genres: list[str] = Field(default_factory=list, description="Only items with one of these.")
    exclude_genres: list[str] = Field(default_factory=list, description="No items with any of these.")
    exclude_items: list[ExternalId] = Field(
        default_factory=list, max_length=MAX_K, description="Item ids never to return."
    )

    @model_validator(mode="after")
    def _values_match_items(self) -> HistoryRequest:
        if self.values is not None and len(self.values) != len(self.items):
            raise ValueError(f"values has {len(self.values)} entries but items has {len(self.items)}")
        return self


class InteractionEvent(Strict):
    user_id: ExternalId
    item_id: ExternalId
    kind: str = Field(default="rating", min_length=1, max_length=32)
    value: float = Field(default=1.0, allow_inf_nan=False)
    timestamp: int | None = Field(default=None, ge=0, description="Epoch seconds; default: now.")


class StoredInteractions(Strict):
    stored: int = Field(description="Events newly stored.")
    duplicates: int = Field(description="Events already stored (same user, item, kind, timestamp).")
    new_users: list[str]
    new_items: list[str]
    not_in_model: list[str] = Field(
        description="Items the loaded model does not know: stored, recommendable after retraining."
    )


class ReloadResult(Strict):
    reloaded: bool
    version: str
    previous: str | None
    seconds: float


class Health(Strict):
    status: Literal["alive"] = "alive"


class Readiness(Strict):
    ready: bool
    model_version: str | None
    database: bool
    detail: str | None = None


class ErrorMessage(Strict):
    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI documentation of the error responses an endpoint can give."""
    described = {
        401: "Missing or wrong X-API-Key (the message does not say which), or no key configured.",
        404: "An item id the loaded model does not know; the message names it.",
        503: "No model loaded yet, or the database is unavailable for a write.",
    }
    return {code: {"model": ErrorMessage, "description": described[code]} for code in codes}
