"""The promotion policy: which versions may become production.

A version is promotable when its files are intact (a corrupt version would fail to load in the
service, so ``--force`` does not override this) and its validation metric reaches the baseline
measured on the same split (``--force`` overrides this one).
"""

from __future__ import annotations

from recsys.errors import ArtifactError, RegistryError
from recsys.registry.artifacts import verify
from recsys.registry.versions import VersionInfo

#: The validation metric promotion compares with the baseline measured on the same split (stored
#: by the trainer as ``metrics["baseline_" + metric]``): nDCG@10 against popularity, or, for rating
#: models, RMSE against predicting the mean training rating. True: larger is better.
GUARD_METRIC = "ndcg@10"
RATING_GUARD_METRIC = "rmse"
BASELINE_PREFIX = "baseline_"


def check_promotable(info: VersionInfo, *, force: bool = False) -> None:
    """Raise unless ``info`` may become production (``force`` skips only the metric guard)."""
    check_intact(info)
    if not force:
        check_beats_baseline(info)


def check_intact(info: VersionInfo, *, reuse: bool = False) -> None:
    """Raise ArtifactError naming the damaged file when the version's checksums do not hold
    (``reuse``: not hashed again when unchanged since its last full verification, see
    :func:`recsys.registry.artifacts.verify`)."""
    try:
        verify(info.path, reuse=reuse)
    except ArtifactError as exc:
        raise ArtifactError(
            f"version {info.version} is damaged and cannot be served: {exc}. "
            "Train a new version (or restore the folder from a backup)"
        ) from exc


def check_beats_baseline(info: VersionInfo) -> None:
    """Raise RegistryError unless the version's validation metric reaches its baseline.

    Rating models (with a validated RMSE) must predict better than the mean rating; every other
    model must rank at least as well as popularity (nDCG@10).
    """
    metrics = info.metrics
    rating = RATING_GUARD_METRIC in metrics and BASELINE_PREFIX + RATING_GUARD_METRIC in metrics
    metric = RATING_GUARD_METRIC if rating else GUARD_METRIC
    baseline_name = "mean-rating baseline" if rating else "popularity baseline"
    value, baseline = metrics.get(metric), metrics.get(BASELINE_PREFIX + metric)
    if value is None or baseline is None:
        raise RegistryError(
            f"{info.version} has no validation {metric} and {baseline_name} to compare; "
            "pass --force to promote it anyway"
        )
    worse = float(value) > float(baseline) if rating else float(value) < float(baseline)
    if worse:
        relation = "worse than" if rating else "below"
        raise RegistryError(
            f"{info.version} has validation {metric} {float(value):.4f}, {relation} the {baseline_name} "
            f"{float(baseline):.4f} on the same split; pass --force to promote it anyway"
        )
