"""iALS and the low-rank autoencoder as one inner product: a weighted sum of their scores served
from one FAISS index.

Both parts learn from the same binary matrix. Each part's scores are divided by their scale
``sigma`` (the root mean square, over the training users, of the standard deviation of a user's
scores over the catalogue), so that ``weight`` means what it says on any data. With
``m_ials = sqrt(weight / sigma_ials)`` and ``m_lr = sqrt((1 - weight) / sigma_lr)``:

    user vector = [m_ials * u_ials, m_lr * u_lr],   item vector = [m_ials * v_ials, m_lr * v_lr]
    score       = weight * s_ials / sigma_ials + (1 - weight) * s_lr / sigma_lr

The autoencoder is fitted first (closed form); the iALS sweeps then run in this model's own epoch
loop, so early stopping watches the blend's validation nDCG, and the refit runs the sweeps the
blend's validation chose. A validated fit then chooses the weight from a grid by validation nDCG
(re-weighting needs no refit), and ``recsys train``'s refit uses that weight
(:meth:`refit_params`). Fold-in is the concatenation of both parts' fold-ins (each vectorised).

The autoencoder holds one dense items x items matrix while it fits. A catalogue beyond
``max_items``, or beyond the memory available, is therefore fitted as iALS alone: weight 1.0, the
autoencoder skipped, a warning logged, the weight saved in the model's config and the reason in
:meth:`fit_notes` (version.json's ``training.fit_notes``). So the blend trains at any catalogue
size and can be the default model; beyond the limit it serves exactly what iALS would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError
from recsys.models.base import FitOptions, ModelConfig, Recommender, WarmStart
from recsys.models.ials import ImplicitALS, ImplicitALSConfig
from recsys.models.lowrank import PEAK_MATRICES, LowRankAE, LowRankAEConfig, history_times_encoder
from recsys.runtime.memory import dense_items_problem

logger = logging.getLogger(__name__)

#: Weights a validated fit chooses from (re-weighting costs one validation ranking, no refit).
WEIGHT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Extra arrays (0-d) holding each part's multiplier ``m`` (see the module docstring).
IALS_SCALE, LOWRANK_SCALE = "ials_scale", "lowrank_scale"
#: Held while a loaded model splits its parts' vectors (module-level: a model stays picklable).
_SPLIT_LOCK = threading.Lock()


class IALSLowRankConfig(ImplicitALSConfig, LowRankAEConfig):
    """The parameters of both parts under their own names (their defaults), and the blend weight.

    The best fixed weight differs by dataset: on the validation carve-outs (seed 43) of the
    Protocol K train parts (seed 42), 0.7 on ml-100k and 0.4 on ml-latest-small, with 0.4-0.6
    tied on the mean of both (docs/benchmarks.md). So a validated fit chooses it on its own data
    (``choose_weight``), and 0.5 is what early stopping and unvalidated fits use."""

    weight: float = Field(default=0.5, gt=0, le=1)
    """Share of iALS in the blended score (each part's scores scaled to unit spread first): the
    weight early stopping validates the sweeps with, and the served weight when not chosen.
    1.0 is iALS alone: the autoencoder is not fitted (what a fit beyond ``max_items`` sets)."""
    choose_weight: bool = True
    """With validation (``recsys train``'s carve-out), choose the weight from ``WEIGHT_GRID`` by
    validation nDCG@10 after the sweeps; the refit on all data then uses that weight."""


class IALSLowRank(Recommender):
    """Implicit ALS + low-rank autoencoder, blended by concatenating their scaled vectors."""

    name = "ials-lowrank"
    Config = IALSLowRankConfig
    recipe = Recipe(values="binary")  # both parts read binary histories
    predicts_ratings = False
    uses_catalog = False
    # The weight is not sampled: every validated fit chooses it (``choose_weight``).
    search_space = (*ImplicitALS.search_space, *LowRankAE.search_space)
    epoch_limit = "epochs"
    fits_any_catalogue = True  # beyond max_items it fits iALS alone (the module docstring)
    engines = ImplicitALS.engines  # the sweeps are iALS's; the autoencoder is closed form, here
    config: IALSLowRankConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        fields = self.config.model_dump()
        self._ials = ImplicitALS(ImplicitALSConfig(**{k: fields[k] for k in ImplicitALSConfig.model_fields}))
        self._lowrank = LowRankAE(LowRankAEConfig(**{k: fields[k] for k in LowRankAEConfig.model_fields}))
        self._unsplit: dict[str, np.ndarray] | None = None
        """A loaded model's arrays until a part is first used (see ``_restore_extra_arrays``)."""
        self.scales: tuple[float, float] | None = None
        """The multipliers ``(m_ials, m_lr)`` of the served vectors."""
        self._chosen: dict[str, Any] = {}
        self.lowrank_skipped: str | None = None
        """Why the last fit skipped the autoencoder (None: it did not, or weight 1.0 was asked)."""

    @property
    def ials(self) -> ImplicitALS:
        """The iALS part (its own, unscaled vectors)."""
        self._split()
        return self._ials

    @ials.setter
    def ials(self, part: ImplicitALS) -> None:
        self._split()
        self._ials = part

    @property
    def lowrank(self) -> LowRankAE:
        """The autoencoder part (its own, unscaled vectors)."""
        self._split()
        return self._lowrank

    @lowrank.setter
    def lowrank(self, part: LowRankAE) -> None:
        self._split()
        self._lowrank = part

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        options = options or FitOptions()
        x = sp.csr_matrix(self.recipe.apply_matrix(user_items), dtype=np.float32)
        self.lowrank_skipped = None if self.ials_alone else self._lowrank_problem(x.shape[1])
        if self.lowrank_skipped is not None:
            logger.warning(
                "%s: fitting iALS alone (weight 1.0, the low-rank autoencoder skipped): %s",
                self.name, self.lowrank_skipped,
            )  # fmt: skip
            self.config = self.config.model_copy(update={"weight": 1.0})
        if not self.ials_alone:
            self.lowrank.fit(x)  # closed form, deterministic: refitted (not checkpointed) on resume
        warm = self._ials_warm_start(options.warm_start)
        with self.ials.epoch_plan(x, warm, options.engine) as plan:
            self._run_epochs(_BlendedSweeps(self, plan.step), options, limit=plan.limit, rule=plan.rule)
        self._chosen = {}
        if options.validate is not None and self.config.choose_weight and not self.ials_alone:
            self._choose_weight(options.validate)
        return self

    @property
    def ials_alone(self) -> bool:
        """Weight 1.0: the served vectors are iALS's alone and the autoencoder is not fitted."""
        return self.config.weight >= 1.0

    def _lowrank_problem(self, n_items: int) -> str | None:
        """Why the autoencoder cannot fit ``n_items`` items here (its own memory rule), or None."""
        return dense_items_problem(
            self.name, n_items, self.config.max_items, matrices=PEAK_MATRICES,
            alternatives="let the blend fit iALS alone, whose memory grows with the catalogue",
        )  # fmt: skip

    def fit_notes(self) -> dict[str, Any]:
        if self.lowrank_skipped is None:
            return {}
        return {"parts": ["ials"], "weight": 1.0, "lowrank_skipped": self.lowrank_skipped}

    def refit_params(self) -> dict[str, Any]:
        return dict(self._chosen)

    def _choose_weight(self, validate: Callable[[Recommender], dict[str, float]]) -> None:
        """Serve the weight of ``WEIGHT_GRID`` with the best validation nDCG (the first of equals)."""
        scores = {}
        for weight in WEIGHT_GRID:
            self.config = self.config.model_copy(update={"weight": weight})
            self._combine()
            scores[weight] = validate(self)["val_ndcg"]
        best = max(scores, key=lambda weight: scores[weight])
        logger.info("%s: weight %.1f chosen on validation (nDCG@10 %s)", self.name, best, scores)
        self.config = self.config.model_copy(update={"weight": best})
        self._combine()
        self._chosen = {"weight": best}

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        if self.scales is None:
            self._require_items()  # raises NotFittedError
            raise DataError(f"the {self.name} model has no part scales; it was saved incompletely")
        m_ials, m_lr = self.scales
        rows = self.recipe.apply_matrix(user_items)
        folded = m_ials * self.ials.fold_in(rows)
        if self.ials_alone:
            return np.asarray(folded, dtype=np.float32)
        return np.hstack([folded, m_lr * self.lowrank.fold_in(rows)]).astype(np.float32)

    def fold_in_one(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``fold_in`` of one history without sparse matrices: iALS's single-row solve and the
        autoencoder's encoder rows summed in ``fold_in``'s order, so that half is bit for bit
        ``fold_in``'s (the service folds in one history per request)."""
        encoder = self.lowrank.encoder
        if self.scales is None or (not self.ials_alone and encoder is None):
            return super().fold_in_one(columns, values)  # fold_in raises the error naming the gap
        m_ials, m_lr = self.scales
        values = self.recipe.apply_values(np.asarray(values, dtype=np.float32))
        kept = values != 0
        if not kept.all():
            columns, values = columns[kept], values[kept]
        folded = self.ials.fold_in_one(columns, values)
        if self.ials_alone or encoder is None:
            return np.asarray(m_ials * folded, dtype=np.float32)
        # Both parts written into one float32 row: what hstack and astype gave, without their copies.
        vector = np.empty((1, folded.shape[1] + encoder.shape[1]), dtype=np.float32)
        np.multiply(m_ials, folded, out=vector[:, : folded.shape[1]])
        encoded = history_times_encoder(encoder, columns, self.lowrank.recipe.apply_values(values))
        np.multiply(m_lr, encoded, out=vector[0, folded.shape[1] :])
        return vector

    def prepare_fold_in(self) -> None:
        """iALS's (the autoencoder's half is a sum of encoder rows: nothing to prepare)."""
        if self.scales is not None:  # else fold-in raises the error naming what is missing
            self.ials.prepare_fold_in()

    def _combine(self) -> None:
        """Serve the parts' current vectors, each scaled by its multiplier, side by side."""
        if self.ials_alone:
            users_ials, items_ials = self.ials.user_factors, self.ials._require_items()
            if users_ials is None:
                raise DataError(f"the iALS part of the {self.name} model has no user vectors")
            m_ials = float(np.sqrt(1.0 / score_scale(users_ials, items_ials)))
            self.scales = (m_ials, 0.0)
            self.user_factors = np.asarray(m_ials * users_ials, dtype=np.float32)
            self.item_factors = np.asarray(m_ials * items_ials, dtype=np.float32)
            self._index = None
            return
        users = [self.ials.user_factors, self.lowrank.user_factors]
        items = [self.ials._require_items(), self.lowrank._require_items()]
        if users[0] is None or users[1] is None:
            raise DataError(f"a part of the {self.name} model has no user vectors")
        weight = self.config.weight
        m_ials = float(np.sqrt(weight / score_scale(users[0], items[0])))
        m_lr = float(np.sqrt((1.0 - weight) / score_scale(users[1], items[1])))
        self.scales = (m_ials, m_lr)
        self.user_factors = np.hstack([m_ials * users[0], m_lr * users[1]]).astype(np.float32)
        self.item_factors = np.hstack([m_ials * items[0], m_lr * items[1]]).astype(np.float32)
        self._index = None

    def _ials_warm_start(self, warm: WarmStart | None) -> WarmStart | None:
        """The iALS part's previous vectors: the first ``factors`` columns, unscaled (a version
        fitted as iALS alone has only those)."""
        if warm is None:
            return None
        factors = self.config.factors
        scale = warm.extra.get(IALS_SCALE)
        width = warm.item_factors.shape[1]
        if scale is None or width < factors:
            raise ConfigError(
                f"warm-start vectors have shape {warm.item_factors.shape} without the iALS part's "
                f"scale; expected {factors} iALS columns followed by the autoencoder's, from an "
                f"{self.name} version"
            )
        return WarmStart(
            user_factors=warm.user_factors[:, :factors] / float(scale),
            item_factors=warm.item_factors[:, :factors] / float(scale),
            known_users=warm.known_users,
            known_items=warm.known_items,
        )

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        if self.scales is None:
            return {}
        scales = {IALS_SCALE: np.array(self.scales[0]), LOWRANK_SCALE: np.array(self.scales[1])}
        if self.ials_alone:
            return scales
        return {} if self.lowrank.encoder is None else {"encoder": self.lowrank.encoder, **scales}

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if IALS_SCALE not in arrays or self.item_factors is None:
            return
        m_ials, m_lr = float(arrays[IALS_SCALE]), float(arrays[LOWRANK_SCALE])
        if self.ials_alone:
            self.scales = (m_ials, 0.0)
        elif "encoder" in arrays:
            self.scales = (m_ials, m_lr)
        else:
            return
        # The parts' unscaled item vectors are copies of the served ones (a part of the item
        # vectors at 25M): made when a part is first used (a fold-in), not by every load.
        self._unsplit = arrays

    def _split(self) -> None:
        """The parts' own vectors from a loaded model's served ones (once; the service's request
        threads may ask at the same time)."""
        if self._unsplit is None:
            return
        with _SPLIT_LOCK:
            arrays = self._unsplit
            if arrays is None or self.scales is None or self.item_factors is None:
                return
            m_ials, m_lr = self.scales
            if self.ials_alone:
                self._ials.item_factors = np.ascontiguousarray(self.item_factors / m_ials)
            else:
                factors = self.config.factors
                self._ials.item_factors = np.ascontiguousarray(self.item_factors[:, :factors] / m_ials)
                self._lowrank.item_factors = np.ascontiguousarray(self.item_factors[:, factors:] / m_lr)
                self._lowrank.encoder = arrays["encoder"]
            self._unsplit = None


def score_scale(users: np.ndarray, items: np.ndarray) -> float:
    """Root mean square over ``users`` of the standard deviation of a user's scores ``u . v`` over
    all ``items``: ``sqrt(trace(U^T U / n_users  Cov(V)))``, from the two small Gram matrices,
    never the users x items scores."""
    users64, items64 = users.astype(np.float64), items.astype(np.float64)
    centred = items64 - items64.mean(axis=0)
    covariance = centred.T @ centred / max(len(items64), 1)
    second_moment = users64.T @ users64 / max(len(users64), 1)
    variance = float(np.sum(second_moment * covariance))
    if not variance > 0:
        raise DataError("a part of the blend scores every item alike; there is nothing to rank by")
    return float(np.sqrt(variance))


class _BlendedSweeps:
    """iALS's sweeps, exporting the blend: validation after each sweep sees the blended vectors."""

    def __init__(self, model: IALSLowRank, sweeps: Any) -> None:
        self.model, self.sweeps = model, sweeps

    def train_epoch(self, epoch: int) -> dict[str, float]:
        result: dict[str, float] = self.sweeps.train_epoch(epoch)
        return result

    def export(self) -> None:
        self.sweeps.export()
        self.model._combine()

    def state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = self.sweeps.state()
        return state

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.sweeps.load_state(arrays)
