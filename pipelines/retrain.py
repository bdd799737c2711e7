"""The retraining pipeline: new data -> train -> temporal evaluation -> promote -> index -> reload.

Safe under cron: a database lock lets one run at a time through, and production only changes
in the last step (promotion), so a failure at any earlier step leaves it untouched. Every step
logs what it did and a failure names its step.

The comparison is a backtest on today's data: each user's newest 20% of events is held out, and
the candidate (model, parameters, recipe) and production's are both fitted on the older part by
the one fitting path that trains the candidate itself (:func:`recsys.training.fitting.fit_version`:
validation carve-out, epochs chosen, refit), then scored on the held-out part next to popularity.
Evaluating the production artifact as it is would not be fair: it was trained on many of the
held-out events. When the two are the same, the candidate differs only by fresher data and is
scored once. A warm-started candidate is backtested cold: the version it starts from saw the
held-out events.

When the data changed a lot (no production version yet, or more new interactions than
``RECSYS_RETRAIN_FULL_CHANGE_RATIO`` of those production was trained on), a bounded tuning step
searches the model's space first (:func:`recsys.training.tuning.search`, the tuner of ``recsys
tune``): ``RECSYS_PIPELINE_TUNE_TRIALS`` trials within ``RECSYS_PIPELINE_TUNE_SECONDS``, the
parameters in use as the first trial, on the validation carve-out of the backtest's older part,
so that the backtest's held-out events stay unseen. The backtest then scores the tuned parameters
next to the untuned ones, and the tuned ones are kept only when they are not worse there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import numpy as np
from sqlalchemy import Engine, func, select

from recsys.data.interactions import Interactions
from recsys.data.recipe import Recipe
from recsys.data.splits import temporal_split
from recsys.db.models import Interaction
from recsys.errors import RecsysError
from recsys.evaluation.ranking import evaluate_ranking
from recsys.models import get_model_class
from recsys.models.popularity import Popularity
from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.retrieval import Retriever
from recsys.retrieval.loading import version_index
from recsys.scoring import write_database
from recsys.settings import Settings
from recsys.training.fitting import ValidationSplit, fit_version, parse_config, too_small
from recsys.training.locks import DatabaseLock
from recsys.training.trainer import future_interactions, load_catalog, load_data, train, version_recipe

logger = logging.getLogger(__name__)

LOCK_NAME = "retraining-pipeline"
T = TypeVar("T")


class PipelineError(RecsysError):
    """A step of the retraining pipeline failed; production is unchanged."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"retraining failed at step '{step}': {cause}; production is unchanged")
        self.step = step


@dataclass
class PipelineResult:
    """What one run did: its outcome, the versions involved and each step's log line."""

    outcome: str  # "promoted", "not-promoted", "up-to-date"
    model: str
    candidate: str | None = None
    production_before: str | None = None
    production_after: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)
    """The tuning step's figures when it ran: trials, seconds, validation and backtest nDCG@10 of
    the parameters before and after, and whether the tuned ones were kept."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_pipeline(
    engine: Engine,
    settings: Settings,
    *,
    model: str | None = None,
    full: bool = False,
    progress: bool = False,
    kinds: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    combine: str | None = None,
    tune: bool | None = None,
) -> PipelineResult:
    """Run every step once; raises PipelineError naming the failed step.

    ``kinds``, ``weights`` and ``combine`` override the model's recipe (default: production's
    recipe when production is the same model, else the model's own). ``tune`` forces the tuning
    step on or off (None: when the data changed a lot and ``RECSYS_PIPELINE_TUNE_TRIALS`` > 0)."""
    registry = ModelRegistry(engine, settings.artifacts)
    result = PipelineResult(outcome="running", model=model or settings.default_model)

    def step(name: str, action: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            value = action()
        except Exception as exc:
            logger.error("step %s failed: %s", name, exc)
            raise PipelineError(name, exc) from exc
        logger.info("step %s done in %.1f s", name, time.perf_counter() - started)
        return value

    def note(line: str) -> None:
        result.steps.append(line)
        logger.info(line)

    lock = DatabaseLock(engine, LOCK_NAME, stale_after=settings.lock_stale_seconds)
    step("lock", lock.acquire)
    try:
        production = registry.production()
        result.production_before = result.production_after = production.version if production else None
        if production and model is None:
            result.model = production.model
        now = int(time.time())
        new, total = step("inspect", lambda: _count_new(engine, production, now))
        note(f"inspect: {new} of {total} interactions are newer than the production watermark")
        future, newest = future_interactions(engine, now)
        if future:
            stamp = datetime.fromtimestamp(newest or now, UTC).isoformat()
            note(
                f"inspect: skipping {future} interaction(s) stamped in the future (the newest at {stamp}); "
                "they count once their time has come"
            )
        if production is not None and new == 0 and not full:
            result.outcome = "up-to-date"
            note("inspect: nothing new since the production version; no training")
            return result

        warm = _warm_start_choice(production, result.model, new, total, full, settings)
        note(f"train: {'warm start from ' + warm if warm else 'full retrain'} of {result.model}")
        same_model = production is not None and production.model == result.model
        params = production.params if production and same_model else {}
        base = version_recipe(production) if production and same_model else None
        recipe = (base or get_model_class(result.model).recipe).override(
            kinds=kinds, weights=weights, combine=combine
        )
        note(f"recipe: {recipe.describe()}")

        data = step("load", lambda: load_data(engine, recipe, until=now))
        parts = temporal_split(data)
        untuned = params
        tuning_reason = _tuning_choice(production, new, total, tune, settings)
        if tuning_reason is not None and get_model_class(result.model).search_space:
            note(f"tune: {tuning_reason}")
            tuned = step("tune", lambda: _tune(engine, parts[0], result.model, params, recipe, settings))
            if tuned is None:
                note(f"tune: skipped, the older part cannot be validated ({too_small(parts[0])})")
            else:
                result.tuning = tuned
                params = tuned["params"]
                note(
                    f"tune: {tuned['trials']} trials in {tuned['seconds']:.0f} s, validation nDCG@10 "
                    f"{tuned['validation_before']:.4f} -> {tuned['validation_after']:.4f}"
                )
        scores = step(
            "evaluate", lambda: _evaluate(engine, parts, result.model, params, recipe, production, untuned)
        )
        if "untuned" in scores:
            keep = scores["candidate"] >= scores["untuned"]
            result.tuning.update(
                backtest_before=scores["untuned"], backtest_after=scores["candidate"], kept=keep
            )
            note(
                f"tune: backtest nDCG@10 {scores['untuned']:.4f} untuned, {scores['candidate']:.4f} tuned; "
                + ("the tuned parameters are kept" if keep else "the untuned parameters are kept")
            )
            if not keep:
                params = untuned
                scores["candidate"] = scores["untuned"]
            elif warm:
                warm = None  # other factors or ranks than the version it would start from
                note("train: full retrain with the tuned parameters instead of a warm start")
        result.metrics = scores
        note(
            "evaluate (temporal split): "
            + ", ".join(f"{name} nDCG@10 {value:.4f}" for name, value in scores.items())
        )
        promote = _should_promote(scores, settings.promotion_tolerance)
        if not promote:
            result.outcome = "not-promoted"
            note("decide: the candidate is worse than production or popularity beyond the tolerance")
            return result

        candidate = step(
            "train",
            lambda: train(
                engine,
                settings,
                result.model,
                params,
                kinds=recipe.kinds,
                weights=recipe.weights,
                combine=recipe.combine,
                until=now,
                warm_start=warm,
                progress=progress,
            ),
        )
        result.candidate = candidate.version
        note(f"train: registered {candidate.version} (index built with it)")
        # The registry shows the backtest next to the version (`recsys models list`, the dashboard):
        # the one figure measured on today's split for candidate and production alike.
        registry.add_metrics(
            candidate.version,
            {"backtest_ndcg@10": scores["candidate"], "backtest_baseline_ndcg@10": scores["popularity"]},
        )
        if settings.pipeline_score_k:
            rows = step("score", lambda: _score(engine, registry, candidate, data, settings.pipeline_score_k))
            note(f"score: wrote {rows} recommendations for {candidate.version}")
        if candidate.status != "production":
            lock.ensure_held()  # a run whose lock was taken over must not promote
            step("promote", lambda: registry.promote(candidate.version))
        result.production_after = candidate.version
        result.outcome = "promoted"
        note(f"promote: {candidate.version} is production")
        for url in settings.service_urls:
            note(f"reload: {url} {_notify(url, settings)}")
        return result
    finally:
        lock.release()


def _count_new(engine: Engine, production: VersionInfo | None, now: int) -> tuple[int, int]:
    """Interactions up to ``now``: those newer than production's watermark, and all of them."""
    watermark = production.watermark if production and production.watermark is not None else None
    with engine.connect() as connection:
        total = connection.scalar(select(func.count()).where(Interaction.ts <= now)) or 0
        if watermark is None:
            return int(total), int(total)
        new = (
            connection.scalar(select(func.count()).where(Interaction.ts > watermark, Interaction.ts <= now))
            or 0
        )
    return int(new), int(total)


def _warm_start_choice(
    production: VersionInfo | None, model: str, new: int, total: int, full: bool, settings: Settings
) -> str | None:
    """Warm-start from production when it is the same model and the data changed little."""
    # A closed-form model (no epochs) gains nothing from starting near the answer.
    if full or production is None or production.model != model or get_model_class(model).epoch_limit is None:
        return None
    old = max(total - new, 1)
    return None if new / old > settings.retrain_full_change_ratio else production.version


def _tuning_choice(
    production: VersionInfo | None, new: int, total: int, tune: bool | None, settings: Settings
) -> str | None:
    """Why this run tunes, or None: forced by ``tune``, else when the data changed a lot (no
    production yet, or new interactions above ``retrain_full_change_ratio`` of the old) and
    ``pipeline_tune_trials`` allows trials."""
    if tune is not None:
        return "asked for (--tune)" if tune else None
    if settings.pipeline_tune_trials < 1:
        return None
    if production is None:
        return "no production version yet: the parameters have never been chosen on this data"
    old = max(total - new, 1)
    if new / old > settings.retrain_full_change_ratio:
        return (
            f"the data changed a lot ({new} new interactions, {new / old:.0%} of the {old} production was "
            f"trained on; above RECSYS_RETRAIN_FULL_CHANGE_RATIO={settings.retrain_full_change_ratio})"
        )
    return None


def _tune(
    engine: Engine,
    older: Interactions,
    model_name: str,
    params: dict[str, Any],
    recipe: Recipe,
    settings: Settings,
) -> dict[str, Any] | None:
    """The bounded search on the validation carve-out of the backtest's older part, starting from
    ``params``: the tuned parameters and the figures, or None when the part is too small."""
    from recsys.training.tuning import search

    split = ValidationSplit.try_carve(older)
    if split is None:
        return None
    model_class = get_model_class(model_name)
    searched = {r.name for r in model_class.search_space}
    current = parse_config(model_name, params).model_dump()
    catalog = load_catalog(engine, older.items) if model_class.uses_catalog else None
    started = time.perf_counter()
    found = search(
        model_name, split, recipe, trials=max(settings.pipeline_tune_trials, 1),
        timeout=settings.pipeline_tune_seconds, fixed={k: v for k, v in params.items() if k not in searched},
        first={name: current[name] for name in searched}, catalog=catalog,
    )  # fmt: skip
    completed = [trial for trial in found.trials if trial.value is not None]
    tuned = {name: found.best_params[name] for name in searched if name in found.best_params}
    changed = any(tuned[name] != current[name] for name in tuned)
    return {
        "trials": len(completed),
        "seconds": time.perf_counter() - started,
        "validation_before": completed[0].value,
        "validation_after": found.best_value,
        "params": {**params, **tuned} if changed else params,
        "tuned": tuned if changed else {},
        "each_trial": [
            {"params": trial.params, "validation": trial.value, "seconds": trial.seconds}
            for trial in completed
        ],
    }


def _evaluate(
    engine: Engine,
    parts: tuple[Interactions, Interactions],
    model_name: str,
    params: dict[str, Any],
    recipe: Recipe,
    production: VersionInfo | None,
    untuned: dict[str, Any] | None = None,
) -> dict[str, float]:
    """nDCG@10 of the candidate, production and popularity on one temporal split (``parts``: the
    older part and the held-out newest events), each fitted on the older part by the one fitting
    path (the candidate's registered fit runs it on everything). When tuning changed the
    candidate's parameters, the ``untuned`` ones are scored too."""
    train_part, test_part = parts
    seen, test_csr = train_part.to_csr(), test_part.to_csr()

    def backtest(name: str, backtest_params: dict[str, Any], backtest_recipe: Recipe) -> float:
        model_class = get_model_class(name)
        part = train_part if backtest_recipe == recipe else _older_part(engine, backtest_recipe, train_part)
        catalog = load_catalog(engine, part.items) if model_class.uses_catalog else None
        fitted = fit_version(name, backtest_params, part, recipe=backtest_recipe, catalog=catalog)
        return evaluate_ranking(fitted.model, seen, test_csr)["ndcg"]

    popularity = Popularity().fit(Popularity.recipe.apply_matrix(seen))
    scores = {
        "candidate": backtest(model_name, params, recipe),
        "popularity": evaluate_ranking(popularity, seen, test_csr)["ndcg"],
    }
    if production is not None:
        production_recipe = version_recipe(production) or get_model_class(production.model).recipe
        same = production.model == model_name and production.params == params and production_recipe == recipe
        scores["production"] = (
            scores["candidate"] if same else backtest(production.model, production.params, production_recipe)
        )
    if untuned is not None and untuned != params:
        production_is_untuned = (
            production is not None
            and production.model == model_name
            and production.params == untuned
            and (version_recipe(production) or get_model_class(production.model).recipe) == recipe
        )
        scores["untuned"] = (
            scores["production"] if production_is_untuned else backtest(model_name, untuned, recipe)
        )
    return scores


def _older_part(engine: Engine, recipe: Recipe, candidate_part: Interactions) -> Interactions:
    """Production's data under its own recipe, cut at the same pairs as the candidate's older part
    (a recipe with other kinds selects other pairs; the cut is per (user, item) pair)."""
    data = load_data(engine, recipe)
    pairs = candidate_part.user_index.astype(np.int64) * len(candidate_part.items) + candidate_part.item_index
    own = data.user_index.astype(np.int64) * len(data.items) + data.item_index
    return data.subset(np.isin(own, pairs))


def _should_promote(scores: dict[str, float], tolerance: float) -> bool:
    candidate = scores["candidate"]
    if candidate < scores["popularity"]:
        return False
    return "production" not in scores or candidate >= scores["production"] - tolerance


def _score(
    engine: Engine, registry: ModelRegistry, candidate: VersionInfo, data: Interactions, k: int
) -> int:
    loaded = registry.load(candidate.version)
    retriever = Retriever.build(
        loaded.model, loaded.users, loaded.items, data,
        index=version_index(loaded), watermark=loaded.info.watermark,
    )  # fmt: skip
    return write_database(engine, retriever, k=k, version=candidate.version)


def _notify(url: str, settings: Settings) -> str:
    """Ask one running service to reload; a failure is reported, not fatal (services also poll)."""
    headers = {"X-API-Key": settings.api_key.get_secret_value()} if settings.api_key else {}
    try:
        response = httpx.post(f"{url.rstrip('/')}/admin/reload", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        logger.warning("could not reach %s: %s", url, exc)
        return f"unreachable ({exc})"
    return f"answered {response.status_code}"
