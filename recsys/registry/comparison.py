"""Which versions' metrics can be compared side by side.

A version's validation metrics are measured on a split of the data it was trained on, so two
versions' figures are comparable only when they come from the same split. Each version records its
split under ``metrics["split"]`` (:func:`split_record`): the kind (``held-out``, or ``in-sample``
when the pairs were seen in training, as for a warm start validated on pairs its previous version
had fitted), a fingerprint of the data it was carved from and the carving seed. The retraining
pipeline's backtest scores candidate and production on one split of today's data; it is stored
with the version under ``backtest_*`` keys (:meth:`ModelRegistry.add_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.registry.versions import PRODUCTION, VersionInfo

SPLIT_KEY = "split"
BACKTEST_PREFIX = "backtest_"
HELD_OUT, IN_SAMPLE = "held-out", "in-sample"

#: Notes shown next to a version's metrics.
NOT_RECORDED = "split not recorded"
OTHER_SPLIT = "other split"


def split_record(kind: str, data_fingerprint: str, seed: int | None = None) -> dict[str, Any]:
    """What ``metrics["split"]`` holds for metrics measured on one split: ``kind`` is
    ``held-out``, ``in-sample`` or a held-out variant that names its restriction (such as
    ``held-out, newer than <watermark>``); ``seed`` when the carving rule takes one."""
    return {"kind": kind, "data": data_fingerprint[:16], "seed": seed}


def metric_note(info: VersionInfo, reference: VersionInfo | None) -> str:
    """Why ``info``'s validation metrics cannot be read next to ``reference``'s ("" when they can).

    ``in-sample``: measured on pairs the model was fitted on (optimistic); ``other split``:
    measured on another split than the reference's; ``split not recorded``: an older version.
    """
    split = info.metrics.get(SPLIT_KEY)
    if not isinstance(split, dict):
        return NOT_RECORDED
    if split.get("kind") == IN_SAMPLE:
        return IN_SAMPLE
    if reference is None or reference.version == info.version:
        return ""
    return "" if reference.metrics.get(SPLIT_KEY) == split else OTHER_SPLIT


def metric_notes(versions: Sequence[VersionInfo]) -> dict[str, str]:
    """The note of every version, relative to the production version among them (if any)."""
    reference = next((info for info in versions if info.status == PRODUCTION), None)
    return {info.version: metric_note(info, reference) for info in versions}
