"""Request and response bodies of the API (kept apart from the storage tables in recsys.db)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from recsys.ingest.rules import ID_PATTERN, normalise_id
from recsys.ingest.specs import MAX_KIND_LENGTH
from recsys.retrieval import Strategy

#: Bounds of ``k`` for every endpoint that returns a list.
MAX_K = 1000
#: Largest ``offset`` (paging reaches the first MAX_OFFSET + MAX_K items).
MAX_OFFSET = 10_000
#: Most events one POST /interactions may carry.
MAX_EVENTS = 5000

#: An id naming a stored user or item, read as ingestion stores ids (trimmed, NFC).
ExternalId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(normalise_id)]


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
        default=None,
        description="One value (rating or strength) per item; default 1.0 each. Each must be a value an "
        "event could store (the input rules' range, RECSYS_INTERACTION_VALUE_MIN/MAX).",
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


#: An id as every door accepts it (recsys.ingest.validation): no control character, not blank.
EventText = Annotated[str, Field(min_length=1, max_length=255, pattern=ID_PATTERN)]
_ISO_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")
_ISO_DATETIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
#: What a JSON body may send, stated exactly (the app adds the configured window's bounds to the
#: integer), so a client that obeys the schema is never refused for its form.
_TIME_SCHEMA = {"anyOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]}
_TIME_FORMS = (
    "epoch seconds (a whole number) or an ISO 8601 date-time with a UTC offset, e.g. 2024-05-01T12:00:00Z"
)


def _epoch_seconds(value: object) -> int:
    """A JSON timestamp as whole epoch seconds (floored), or one error that names both accepted
    forms and, for a time without an offset, the fix. Files take more forms (a cell is text with
    no type); a JSON body states its type, and the schema above states what it may be."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _ISO_START.match(value):
        try:
            return int(_ISO_DATETIME.validate_python(value).timestamp() // 1)
        except ValidationError as exc:
            if any(error["type"] == "timezone_aware" for error in exc.errors()):
                raise ValueError(f"expected {_TIME_FORMS}; {value!r} has no offset (add Z for UTC)") from None
    raise ValueError(f"expected {_TIME_FORMS}; got {value!r}")


EpochSeconds = Annotated[int, BeforeValidator(_epoch_seconds), WithJsonSchema(_TIME_SCHEMA)]


class InteractionEvent(Strict):
    """One event. Values and timestamps obey the server's input rules (the same for file
    ingestion): the bounds below are the configured ones, see docs/operations.md."""

    user_id: EventText
    item_id: EventText
    kind: Annotated[str, Field(min_length=1, max_length=MAX_KIND_LENGTH, pattern=ID_PATTERN)] = "rating"
    value: float = Field(
        default=1.0, strict=True, allow_inf_nan=False, description="A finite number (not a boolean)."
    )
    timestamp: EpochSeconds | None = Field(
        default=None,
        description="Epoch seconds (a whole number), or an ISO 8601 date-time with a UTC offset; "
        "default: now. Times before RECSYS_TIMESTAMP_MIN or more than "
        "RECSYS_TIMESTAMP_MAX_FUTURE_SECONDS ahead are rejected.",
        examples=[1714564800, "2024-05-01T12:00:00Z"],
    )
    event_id: EventText | None = Field(
        default=None,
        description="Your id for this event: a retried request with the same event_id stores nothing "
        "twice. DELETE /interactions/{event_id} removes it.",
    )
    recommendation_id: Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)] | None = Field(
        default=None, description="The recommendation_id of the list this event responds to."
    )

    def epoch_seconds(self, now: int) -> int:
        return now if self.timestamp is None else self.timestamp


class StoredInteractions(Strict):
    stored: int = Field(description="Events newly stored (a replaced value counts as stored).")
    duplicates: int = Field(
        description="Events already stored (same user, item, kind, timestamp and value, or same event_id)."
    )
    conflicting: int = Field(
        default=0,
        description="Events with the key of a stored one but another value, settled by the server's "
        "duplicate policy (RECSYS_DUPLICATE_POLICY: update replaces the value, keep-first keeps it).",
    )
    new_users: list[str]
    new_items: list[str]
    not_in_model: list[str] = Field(
        description="Items the loaded model does not know: stored, recommendable after retraining."
    )


class Deleted(Strict):
    """The outcome of a deletion (also written to the ``deletions`` audit table)."""

    target: Literal["user", "item", "interaction"]
    id: str
    interactions: int = Field(description="Interactions removed with it.")


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


class InternalError(Strict):
    detail: str
    request_id: str = Field(description="Quote it when reporting the error; the server log has the details.")


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI documentation of the error responses an endpoint can give."""
    described = {
        401: "Missing or wrong X-API-Key (the message does not say which), or no key configured.",
        404: "An id that is not known (the model's items; stored users, items or event ids for DELETE).",
        409: "An event has the key of a stored one with another value and the duplicate policy is reject, "
        "or its event_id already names another event.",
        503: "No model loaded yet, or the database is unavailable (or slower than the request timeout).",
    }
    return {code: {"model": ErrorMessage, "description": described[code]} for code in codes}
