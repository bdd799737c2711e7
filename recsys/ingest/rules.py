"""The input rules' bounds and id patterns, without the vectorised checks that apply them.

:mod:`recsys.ingest.validation` applies these rules to chunks of rows (with pandas and pyarrow);
the service builds its request schemas and its :class:`Rules` from this module alone, so that a
worker does not import pandas or pyarrow before it stores its first event.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from recsys.settings import Settings

#: What happens to an event whose key (user, item, kind, timestamp) is already stored, or seen
#: earlier in the same source, with a different value.
DuplicatePolicy = Literal["update", "keep-first", "reject"]
DUPLICATE_POLICIES: tuple[DuplicatePolicy, ...] = ("update", "keep-first", "reject")

#: Control characters (Unicode category Cc) and lone surrogates: never part of an id.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"
FORBIDDEN_IN_IDS = r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]"
#: The same rule for JSON Schema (which cannot express surrogates): no control character, and
#: something other than white space.
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


@dataclass(frozen=True)
class Rules:
    """Bounds every stored interaction obeys; built from the settings by :meth:`from_settings`."""

    value_min: float = 0.0
    value_max: float = 1e6
    value_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    timestamp_min: int = 0
    max_future_seconds: int = 86_400
    duplicate_policy: DuplicatePolicy = "update"

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            value_min=settings.interaction_value_min,
            value_max=settings.interaction_value_max,
            value_bounds=dict(settings.interaction_value_bounds),
            timestamp_min=settings.timestamp_min,
            max_future_seconds=settings.timestamp_max_future_seconds,
            duplicate_policy=settings.duplicate_policy,
        )

    def value_range(self, kind: str) -> tuple[float, float]:
        return self.value_bounds.get(kind, (self.value_min, self.value_max))

    @property
    def value_envelope(self) -> tuple[float, float]:
        """The widest range over all kinds (what a JSON schema can promise without the kind)."""
        ranges = [(self.value_min, self.value_max), *self.value_bounds.values()]
        return min(low for low, _ in ranges), max(high for _, high in ranges)

    def history_value_problems(self, values: Sequence[float]) -> list[tuple[int, str]]:
        """(position, reason) of each value of a history, whose events have no kind, outside
        every kind's range (:attr:`value_envelope`): a history may only hold values an event
        could store. The reasons read as file ingestion's."""
        low, high = self.value_envelope
        problems = []
        for position, value in enumerate(values):
            if value < low:
                problems.append((position, f"value '{float(value)}' below the minimum {low:g}"))
            elif value > high:
                problems.append((position, f"value '{float(value)}' above the maximum {high:g}"))
        return problems

    def timestamp_max(self, now: float | None = None) -> int:
        return int(now if now is not None else time.time()) + self.max_future_seconds


def printable_text(text: str) -> str:
    """``text`` with control characters (other than tab) and lone surrogates escaped."""
    return "".join(ch if ch.isprintable() or ch == "\t" else ascii(ch)[1:-1] for ch in text)


def normalise_id(text: str) -> str:
    """One id as every door stores it: trimmed and NFC-normalised, as
    :func:`recsys.ingest.validation.clean_ids` does to a column. Ids read from a request's path
    or query go through it, so that they name what ingestion stored."""
    text = text.strip()
    return text if text.isascii() else unicodedata.normalize("NFC", text)
