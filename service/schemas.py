"""Request and response bodies of the API (kept apart from the storage tables in recsys.db)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.state import Strategy

#: Bounds of ``k`` for every endpoint that returns a list.
MAX_K = 1000
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


class Recommendations(Strict):
    user_id: str | None = Field(description="The user asked for; null for an anonymous history.")
    items: list[RecommendedItem]
    model_version: str
    strategy: Strategy = Field(
        description="personalized: the user's trained vector; folded-in: a vector computed from the "
        "user's interactions (new feedback or a new user); popular: the fallback for users with none."
    )


class SimilarItems(Strict):
    item_id: str
    items: list[RecommendedItem]
    model_version: str


class RecommendationQuery(Strict):
    """Query parameters of a known user's recommendations (validated as one model: each separate
    parameter costs FastAPI time on the hottest endpoint)."""

    k: int = Field(default=10, ge=1, le=MAX_K, description="Number of items.")
    exclude_seen: bool = Field(default=True, description="Leave out items the user interacted with.")
    include_genres: list[str] = Field(
        default_factory=list, description="Only items with one of these genres (repeat the parameter)."
    )
    exclude_genres: list[str] = Field(
        default_factory=list, description="No items with any of these genres (repeat the parameter)."
    )


class HistoryRequest(Strict):
    """An anonymous user's history: recommendations are folded in from these items."""

    items: list[ExternalId] = Field(min_length=1, max_length=MAX_K, description="External item ids.")
    values: list[float] | None = Field(
        default=None, description="One value (rating or strength) per item; default 1.0 each."
    )
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: bool = Field(default=True, description="Leave the history's own items out.")
    include_genres: list[str] = Field(default_factory=list, description="Only items with one of these.")
    exclude_genres: list[str] = Field(default_factory=list, description="No items with any of these.")

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
