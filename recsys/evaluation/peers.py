"""Public baselines the benchmark runs next to the recsys models, on the same splits.

Each peer wraps a library users would otherwise pick (implicit's ALS and BPR, Surprise's SVD) or
a closed-form reference (EASE). Peers are an optional extra (``pip install 'recsys[bench]'``):
:func:`missing_requirement` says why a peer cannot run so that the benchmark skips it with that
message instead of failing. Every peer gets the same small tuning budget on the validation
split: the grid stated in its ``grid`` (``--quick`` runs only the first entry).
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.evaluation.metrics import mae, ranking_metrics, rmse
from recsys.index.base import PAD_ID
from recsys.index.exact import ExactIndex

#: Users per block when a peer scores the whole catalogue (bounds the dense score block).
BLOCK_USERS = 1024


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Every stored interaction becomes a 1 (Protocol K ignores rating values)."""
    matrix = sp.csr_matrix(matrix)
    return sp.csr_matrix(
        (np.ones(matrix.nnz, dtype=np.float32), matrix.indices, matrix.indptr), shape=matrix.shape
    )


class Peer(ABC):
    """A baseline: fit on a users x items CSR matrix, then rank (Protocol K) or predict (R)."""

    name: ClassVar[str]
    protocol: ClassVar[str]
    """"K" (top-k ranking on implicit feedback) or "R" (rating prediction)."""
    requires: ClassVar[str | None] = None
    """Importable module the peer needs, or None when numpy/scipy suffice."""
    grid: ClassVar[tuple[dict[str, Any], ...]]
    """The tuning budget: parameter sets tried on the validation split, best first guess first."""

    def __init__(self, seed: int = 42, **params: Any) -> None:
        self.seed = seed
        self.params = params

    @property
    def library(self) -> str:
        """``name version`` of the library that does the work."""
        if self.requires is None:
            return f"numpy {np.__version__}"
        module = importlib.import_module(self.requires)
        return f"{self.requires} {getattr(module, '__version__', '?')}"

    @abstractmethod
    def fit(self, train: sp.csr_matrix) -> Self: ...

    def recommend(self, users: np.ndarray, train_rows: sp.csr_matrix, k: int) -> np.ndarray:
        """Top ``k`` item indices per user (``-1`` padded), the user's ``train_rows`` excluded."""
        raise ConfigError(f"peer {self.name!r} predicts ratings; it does not rank (Protocol K)")

    def predict(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Predicted ratings of (user, item) index pairs."""
        raise ConfigError(f"peer {self.name!r} ranks; it does not predict ratings (Protocol R)")


class _ImplicitPeer(Peer):
    """Shared by implicit's models: same input, same recommend, same BLAS-thread rule."""

    protocol = "K"
    requires = "implicit"

    def _make(self) -> Any: ...

    def fit(self, train: sp.csr_matrix) -> Self:
        import implicit.cpu  # noqa: F401  (load its libraries before limiting their threads)
        from threadpoolctl import threadpool_limits

        # implicit runs its own threads; a multi-threaded BLAS underneath oversubscribes the
        # cores (implicit checks, and warns, when the model is built), so BLAS gets one thread.
        with threadpool_limits(1, "blas"):
            self.model = self._make()
            self.model.fit(binarize(train), show_progress=False)
        return self

    def recommend(self, users: np.ndarray, train_rows: sp.csr_matrix, k: int) -> np.ndarray:
        ids, scores = self.model.recommend(
            np.asarray(users), binarize(train_rows), N=k, filter_already_liked_items=True
        )
        ids = np.asarray(ids, dtype=np.int64).reshape(len(users), -1)
        # implicit fills slots it cannot fill with excluded items scored -FLT_MAX: make them padding.
        scores = np.asarray(scores).reshape(len(users), -1)
        ids[~(scores > np.finfo(np.float32).min)] = PAD_ID
        if ids.shape[1] < k:
            ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=PAD_ID)
        return ids


class ImplicitALSPeer(_ImplicitPeer):
    """implicit's AlternatingLeastSquares (Hu, Koren and Volinsky 2008), 15 iterations."""

    name = "implicit-als"
    grid = tuple(
        {"factors": 128, "regularization": reg, "alpha": alpha, "iterations": 15}
        for reg in (50.0, 10.0, 100.0)
        for alpha in (5.0, 1.0, 10.0)
    )

    def _make(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(random_state=self.seed, **self.params)


class ImplicitBPRPeer(_ImplicitPeer):
    """implicit's BayesianPersonalizedRanking, 100 iterations."""

    name = "implicit-bpr"
    grid = tuple(
        {"factors": 128, "learning_rate": lr, "regularization": reg, "iterations": 100}
        for lr in (0.05, 0.01)
        for reg in (0.01, 0.001)
    )

    def _make(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(random_state=self.seed, **self.params)


class EASEPeer(Peer):
    """EASE (Steck 2019): the closed-form item-item model B = I - P / diag(P), P = (X'X + l2 I)^-1.

    Scores are ``x_u . B[:, i]``, an inner product, so the exact index ranks them (item vector
    ``i`` is column ``i`` of B).
    """

    name = "ease-reference"
    protocol = "K"
    grid = ({"l2": 500.0}, {"l2": 100.0}, {"l2": 250.0}, {"l2": 1000.0})

    def fit(self, train: sp.csr_matrix) -> Self:
        from recsys.models.ease import closed_form

        # The same closed form as the recsys EASE model; the peer differs in its data (the
        # protocol's binarised matrix) and its tuning (the grid on the validation split).
        self.index = ExactIndex(closed_form(binarize(train), float(self.params.get("l2", 500.0))))
        return self

    def recommend(self, users: np.ndarray, train_rows: sp.csr_matrix, k: int) -> np.ndarray:
        rows = binarize(train_rows)
        top = np.empty((rows.shape[0], k), dtype=np.int64)
        for start in range(0, rows.shape[0], BLOCK_USERS):
            block = rows[start : start + BLOCK_USERS]
            top[start : start + block.shape[0]] = self.index.search(block.toarray(), k, block)[0]
        return top


class SurpriseSVDPeer(Peer):
    """Surprise's SVD (biased matrix factorisation by SGD) for Protocol R."""

    name = "surprise-svd"
    protocol = "R"
    requires = "surprise"
    grid = (
        {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02},  # Surprise defaults
        {"n_factors": 200, "n_epochs": 50, "lr_all": 0.005, "reg_all": 0.05},
        {"n_factors": 50, "n_epochs": 40, "lr_all": 0.01, "reg_all": 0.05},
    )

    def fit(self, train: sp.csr_matrix) -> Self:
        import pandas as pd
        from surprise import SVD, Dataset, Reader

        ratings = sp.coo_matrix(train)
        frame = pd.DataFrame({"user": ratings.row, "item": ratings.col, "rating": ratings.data})
        reader = Reader(rating_scale=(float(ratings.data.min()), float(ratings.data.max())))
        trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
        algo = SVD(random_state=self.seed, **self.params)
        algo.fit(trainset)
        # Surprise numbers users and items in order of appearance; map our indices to its own
        # once so that prediction is vectorised (-1: unseen in training).
        self.user_inner = np.full(train.shape[0], -1, dtype=np.int64)
        inner_users = np.fromiter(trainset.all_users(), dtype=np.int64)
        raw_users = np.array([trainset.to_raw_uid(u) for u in inner_users], dtype=np.int64)
        self.user_inner[raw_users] = inner_users
        self.item_inner = np.full(train.shape[1], -1, dtype=np.int64)
        inner_items = np.fromiter(trainset.all_items(), dtype=np.int64)
        raw_items = np.array([trainset.to_raw_iid(i) for i in inner_items], dtype=np.int64)
        self.item_inner[raw_items] = inner_items
        self.algo, self.global_mean = algo, float(trainset.global_mean)
        return self

    def predict(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Surprise's own ``SVD.estimate``, vectorised: mean + known biases + p_u . q_i when
        both are known."""
        users = self.user_inner[np.asarray(user_index)]
        items = self.item_inner[np.asarray(item_index)]
        known_user, known_item = users >= 0, items >= 0
        u, i = np.maximum(users, 0), np.maximum(items, 0)
        estimate = np.full(len(users), self.global_mean)
        estimate += np.where(known_user, self.algo.bu[u], 0.0)
        estimate += np.where(known_item, self.algo.bi[i], 0.0)
        both = known_user & known_item
        dot = np.einsum("ij,ij->i", self.algo.pu[u], self.algo.qi[i])
        return np.asarray(estimate + np.where(both, dot, 0.0))


PEER_CLASSES: dict[str, type[Peer]] = {
    cls.name: cls for cls in (ImplicitALSPeer, ImplicitBPRPeer, EASEPeer, SurpriseSVDPeer)
}


def get_peer_class(name: str) -> type[Peer]:
    try:
        return PEER_CLASSES[name]
    except KeyError:
        raise ConfigError(f"unknown peer {name!r}; choose one of {sorted(PEER_CLASSES)}") from None


def missing_requirement(name: str) -> str | None:
    """Why peer ``name`` cannot run here (its library is not installed), or None when it can."""
    module = get_peer_class(name).requires
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    package = {"surprise": "scikit-surprise"}.get(module, module)
    return (
        f"peer {name!r} skipped: the {package!r} package is not installed "
        "(pip install 'recsys[bench]' installs every peer)"
    )


def evaluate_peer_ranking(peer: Peer, train: sp.csr_matrix, test: sp.csr_matrix, k: int) -> dict[str, float]:
    """Protocol K metrics of a peer, computed exactly as for the recsys models."""
    train, test = sp.csr_matrix(train), sp.csr_matrix(test)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    top = peer.recommend(users, train[users], k)
    return ranking_metrics(top, test[users], n_items=test.shape[1])


def evaluate_peer_rating(peer: Peer, test: sp.csr_matrix, clip: tuple[float, float]) -> dict[str, float]:
    """RMSE and MAE of a peer over every test rating, clipped to the rating range."""
    pairs = sp.coo_matrix(test)
    predicted = np.clip(peer.predict(pairs.row, pairs.col), *clip)
    return {
        "rmse": rmse(predicted, pairs.data),
        "mae": mae(predicted, pairs.data),
        "ratings": float(pairs.nnz),
    }


@dataclass
class Tuning:
    """The outcome of a grid search on the validation split."""

    best: dict[str, Any]
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)


def tune_peer(
    name: str,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    *,
    seed: int = 42,
    k: int = 10,
    clip: tuple[float, float] | None = None,
    quick: bool = False,
) -> Tuning:
    """Try the peer's grid on (train, valid): nDCG@k for ranking peers, RMSE for rating peers."""
    cls = get_peer_class(name)
    grid = cls.grid[:1] if quick else cls.grid
    metric = "ndcg" if cls.protocol == "K" else "rmse"
    trials: list[dict[str, Any]] = []
    for params in grid:
        peer = cls(seed=seed, **params).fit(train)
        if cls.protocol == "K":
            value = evaluate_peer_ranking(peer, train, valid, k)[metric]
        else:
            if clip is None:
                raise ConfigError(f"tuning the rating peer {name!r} needs the rating range (clip)")
            value = evaluate_peer_rating(peer, valid, clip)[metric]
        trials.append({"params": params, metric: value})
    pick = max if metric == "ndcg" else min
    best = pick(trials, key=lambda trial: float(trial[metric]))
    return Tuning(best=dict(best["params"]), metric=metric, trials=trials)
