"""How an interaction log becomes a model's training matrix: the recipe each model class declares.

The database holds events with a kind and a value (a rating, a watch time, a 1 for a click).
A recipe turns them into one users x items matrix in three steps:

1. **Select and weight** (in :func:`recsys.data.matrix.build_interactions`): only the ``kinds``
   chosen (None: every kind); each event contributes ``value * weights[kind]`` (default 1).
2. **Combine** repeated events of one (user, item) pair: ``last`` (the newest value), ``sum``
   or ``max``.
3. **Values** (:meth:`Recipe.apply`): how the combined value becomes what the model learns from.
   ``raw`` keeps it (ratings for a rating model, confidence for implicit ALS), ``binary`` makes
   every pair with a positive value a 1 (the others are dropped), ``threshold`` keeps as 1 only
   the pairs whose value is at least ``threshold`` (a "liked" cut on ratings).

Every model class declares its default recipe (``Recommender.recipe``); ``recsys train``,
``recsys tune`` and ``recsys pipeline run`` override the first two steps with ``--kinds``,
``--weight KIND=W`` and ``--combine``. The recipe a version was trained with is stored with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError

CombineRule = Literal["last", "sum", "max"]
COMBINE_RULES: tuple[str, ...] = get_args(CombineRule)
ValueRule = Literal["raw", "binary", "threshold"]
VALUE_RULES: tuple[str, ...] = get_args(ValueRule)


class Recipe(BaseModel):
    """Kinds, weights, the rule for repeated events and the value rule (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[str, ...] | None = None
    """Interaction kinds to learn from; None takes every kind in the database."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Multiplier per kind (kinds not named weigh 1)."""
    combine: CombineRule = "last"
    """How repeated events of one (user, item) pair become one value."""
    values: ValueRule = "raw"
    """How the combined value becomes the training value: raw, binary or threshold."""
    threshold: float | None = None
    """With ``values="threshold"``: pairs with a value at least this become 1, the rest are dropped."""

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if (self.values == "threshold") != (self.threshold is not None):
            raise ValueError("threshold is set exactly when values is 'threshold'")
        if self.kinds is not None and len(self.kinds) == 0:
            raise ValueError("kinds is empty; use None for every kind")
        bad = {kind: weight for kind, weight in self.weights.items() if not np.isfinite(weight)}
        if bad:
            raise ValueError(f"kind weights must be finite numbers, got {bad}")
        return self

    def override(
        self,
        *,
        kinds: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        combine: str | None = None,
    ) -> Recipe:
        """This recipe with the given parts replaced (None keeps the recipe's own)."""
        changes: dict[str, Any] = {}
        if kinds is not None:
            changes["kinds"] = tuple(kinds)
        if weights:
            changes["weights"] = {**self.weights, **dict(weights)}
        if combine is not None:
            if combine not in COMBINE_RULES:
                raise ConfigError(
                    f"unknown combine rule {combine!r}; choose one of {', '.join(COMBINE_RULES)}"
                )
            changes["combine"] = combine
        if not changes:
            return self
        try:
            return self.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
            raise ConfigError(f"invalid recipe: {problems}") from None

    def apply(self, data: Interactions) -> Interactions:
        """The value rule applied to combined interactions (pairs it drops are removed)."""
        values, keep = self._values(data.values)
        kept = data if keep is None else data.subset(keep)
        return Interactions(
            users=kept.users,
            items=kept.items,
            user_index=kept.user_index,
            item_index=kept.item_index,
            values=values if keep is None else values[keep],
            timestamps=kept.timestamps,
        )

    def apply_matrix(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """The value rule applied to a users x items matrix (a history row, a whole log)."""
        matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        # Each pair once (repeats summed, as the matrix means them), columns sorted: the rule sees
        # a pair's value, and a row's products sum in column order as one history's do.
        matrix.sum_duplicates()
        matrix.data = self.apply_values(matrix.data)
        matrix.eliminate_zeros()
        return matrix

    def apply_values(self, values: np.ndarray) -> np.ndarray:
        """The value rule applied to stored values: what is learnt from each pair, 0 where the
        rule drops it (a matrix then leaves those pairs out)."""
        values, keep = self._values(values)
        # The rules' kept values are all 1: the kept flags as floats (one step; the service
        # applies the rule to every history it folds in).
        return values if keep is None else keep.astype(np.float32)

    def reads_whole_log(self) -> bool:
        """Whether the log this recipe selects (before the value rule) is the log as stored: every
        kind, unweighted, the newest value of a repeated pair (what the service reads as seen)."""
        return self.kinds is None and not self.weights and self.combine == "last"

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``kinds=all, combine=last, values=binary``."""
        kinds = ",".join(self.kinds) if self.kinds else "all"
        parts = [f"kinds={kinds}"]
        if self.weights:
            parts.append("weights=" + ",".join(f"{k}:{w:g}" for k, w in sorted(self.weights.items())))
        parts.append(f"combine={self.combine}")
        parts.append(
            f"values={self.values}" + (f">={self.threshold:g}" if self.threshold is not None else "")
        )
        return ", ".join(parts)

    def _values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        values = np.asarray(values, dtype=np.float32)
        if self.values == "raw":
            return values, None
        keep = values > 0 if self.values == "binary" else values >= np.float32(self.threshold)
        return np.ones_like(values), keep


def recorded_recipe(version_dir: Path) -> Recipe | None:
    """The recipe a registered version was trained with, as the training path recorded it in the
    version's ``version.json`` (under ``training.recipe``); None for versions from before."""
    try:
        manifest = json.loads((version_dir / "version.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    stored = manifest.get("training", {}).get("recipe") if isinstance(manifest, dict) else None
    return Recipe.model_validate(stored) if stored else None
