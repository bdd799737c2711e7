"""Two-tower retrieval with TensorFlow Recommenders: a history-pooled user tower, an item tower
with optional genre and title features and a per-item bias, trained per user on the softmax
likelihood of the user's items (over every item, or sampled with log-Q and mixed negatives on
large catalogues).

TensorFlow is imported only inside ``fit`` and ``fold_in``: a loaded model serves from its numpy
vectors, and only folding in a new user needs the Keras weights saved next to them.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError, NotFittedError
from recsys.models.base import EpochConfig, FitOptions, ModelConfig, Recommender, SearchRange, WarmStart

WEIGHTS_DIR = "tower_weights"
#: Quantile of the trained items' biases given to items without interactions (:func:`new_item_bias`):
#: the median, the highest rule tried that kept ml-100k's Protocol K nDCG@10 (docs/benchmarks.md,
#: "The bias of a new item").
NEW_ITEM_BIAS_QUANTILE = 0.5
_TOKEN = re.compile(r"[a-z0-9]+")


class TwoTowerConfig(EpochConfig):
    """Defaults tuned on the validation splits carved from ml-100k's and ml-latest-small's
    Protocol K train parts (docs/benchmarks.md, "Two-tower model")."""

    dim: int = Field(default=64, ge=1)
    """Size of the user and item vectors."""
    hidden: int = Field(default=128, ge=1)
    """Size of the user tower's history embeddings and hidden layer."""
    temperature: float = Field(default=0.3, gt=0)
    """Softmax temperature over cosine scores; lower is sharper."""
    normalize: bool = True
    """L2-normalise both towers' outputs (cosine scores divided by the temperature)."""
    n_negatives: int = Field(default=0, ge=0)
    """Uniformly sampled items added to each step's candidates (mixed negatives; sampled
    softmax only, above ``full_softmax_items``)."""
    full_softmax_items: int = Field(default=20_000, ge=0)
    """Catalogues up to this many items train with the softmax over every item; larger ones with
    a sampled softmax over the batch's items plus ``n_negatives`` uniform ones."""
    history_dropout: float = Field(default=0.3, ge=0, lt=1)
    """Share of each training history hidden from the user tower per step (denoising)."""
    seen_target_weight: float = Field(default=1.0, ge=0)
    """Weight in the loss of the items the user tower saw (the hidden ones weigh 1): at 0 the
    tower learns only to predict items outside the history it is given, as at serving."""
    max_history: int = Field(default=256, ge=1)
    """Longer training histories are subsampled to about this many items per step (speed)."""
    item_bias: bool = True
    """Learn a per-item logit bias (popularity); exported as one more dimension of the vectors
    (item: bias times temperature, user: 1), so inner products still rank as the logits do."""
    log_q: bool = True
    """Sampled softmax: correct the logits by the log of each candidate's sampling probability
    (popularity bias of the batch's items)."""
    learning_rate: float = Field(default=1e-2, gt=0)
    batch_size: int = Field(default=128, ge=2)
    """Users per step."""
    l2: float = Field(default=0.0, ge=0)
    """L2 penalty on the embedding tables."""
    epochs: int = Field(default=200, ge=1)
    """Most epochs: the limit when early stopping on validation nDCG@10, the exact count
    otherwise (the refit on all data passes the chosen count). Formerly ``max_epochs``."""
    patience: int = Field(default=20, ge=1)
    """Early stopping: an epoch is a handful of steps on small data (a pass over the users), so
    the slowly rising curve is read over more of them."""
    use_user_id: bool = False
    """Add a user id embedding to the user tower (known users only; fold-in has none)."""
    use_item_features: bool = True
    """Use ``item_genres`` / ``item_titles`` from ``FitOptions.features`` when given."""
    title_bins: int = Field(default=4096, ge=1)
    """Hash buckets of title tokens."""
    deterministic: bool = True
    """Enable TensorFlow op determinism (same seed, same vectors on the CPU)."""


class TwoTower(Recommender):
    """User vector = MLP(pooled history item embeddings); item vector = id + features; both
    L2-normalised (cosine), with the item bias as one more dimension of the exported vectors."""

    name = "two-tower"
    Config = TwoTowerConfig
    recipe = Recipe(values="binary")  # histories and positives are item sets
    predicts_ratings = False
    uses_catalog = True
    search_space = (
        SearchRange("dim", 32, 128, log=True, integer=True),
        SearchRange("temperature", 0.02, 0.5, log=True),
        SearchRange("learning_rate", 3e-4, 3e-2, log=True),
        SearchRange("n_negatives", 0, 128, integer=True),  # mixed negatives
    )
    epoch_limit = "epochs"
    engines = ("local", "tf_config")
    config: TwoTowerConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._net: Any = None
        self._shapes: np.ndarray | None = None  # n_users, n_items, n_genres, n_title_bins, n_attrs
        self._weights_path: Path | None = None

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        from recsys.models import towers
        from recsys.runtime.device import distribution_strategy, import_tensorflow

        tf = import_tensorflow()
        options = options or FitOptions()
        config = self.config
        train = _binary(user_items)
        n_users, n_items = train.shape
        if train.nnz == 0:
            raise DataError("cannot fit the two-tower model on an empty interaction matrix")
        features = _prepare_features(options.features or {}, n_users, n_items, config)
        self._shapes = np.array(
            [n_users, n_items, features["n_genres"], features["n_title_bins"], features["n_attrs"]]
        )
        tf.keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()

        counts = np.asarray(train.sum(axis=0)).ravel()
        strategy = distribution_strategy()
        with strategy.scope():
            net = self._build_net(
                histories=towers.ragged_rows(train),
                item_probability=counts / counts.sum() if config.log_q else None,
                trained_items=np.flatnonzero(counts).astype(np.int32),
                item_features={
                    key: tf.constant(value) if key == "genres" else value
                    for key, value in features["item"].items()
                },
                user_attributes=features["user_attributes"],
            )
            optimizer = tf.keras.optimizers.Adam(config.learning_rate)
            net.compile(optimizer=optimizer)
            # Built before the first batch so that its slots exist for checkpoints and resuming.
            optimizer.build(net.trainable_variables)
        self._net = net
        if options.warm_start is not None:
            self._warm_start(options.warm_start)

        # A batch is a set of users (each user's whole history is one example).
        active = np.flatnonzero(np.diff(train.indptr)).astype(np.int32)
        users = tf.data.Dataset.from_tensor_slices({"user": active})

        def train_epoch(number: int) -> dict[str, float]:
            # One seed per epoch (not one reshuffling stream), so a resumed fit sees the same
            # batches as an uninterrupted one.
            batches = (
                users.shuffle(len(active), seed=config.seed + number)
                .batch(config.batch_size, drop_remainder=len(active) > config.batch_size)
                .prefetch(tf.data.AUTOTUNE)
            )
            fitted = net.fit(batches, epochs=1, verbose=0)
            # Under a mirrored strategy Keras sums the replicas' epoch means: their mean is wanted.
            return {"loss": float(fitted.history["epoch_loss"][-1]) / strategy.num_replicas_in_sync}

        self._run_epochs(_TowerEpochs(self, train, optimizer, train_epoch), options, limit=config.epochs)
        self._weights_path = None
        return self

    def _build_net(self, **inputs: Any) -> Any:
        from recsys.models.towers import TowerShapes, TwoTowerNet

        if self._shapes is None:
            raise NotFittedError("the two-tower model has no tower shapes; fit() or load() it first")
        config = self.config
        net = TwoTowerNet(
            TowerShapes(*(int(value) for value in self._shapes)),
            dim=config.dim,
            hidden=config.hidden,
            l2=config.l2,
            use_user_id=config.use_user_id,
            temperature=config.temperature,
            normalize=config.normalize,
            n_negatives=config.n_negatives,
            history_dropout=config.history_dropout,
            max_history=config.max_history,
            seed=config.seed,
            full_softmax_items=config.full_softmax_items,
            seen_target_weight=config.seen_target_weight,
            item_bias=config.item_bias,
            **inputs,
        )
        net.build_towers()
        return net

    def _warm_start(self, warm: WarmStart) -> None:
        """Copy the previous version's vectors of known items into the item id embedding (features
        start at zero, so old items keep their old vectors) and its history embeddings when given."""
        net = self._net
        vectors, bias = warm.item_factors, None
        if net.item_tower.bias is not None:
            width = self.config.dim + 1
            if vectors.ndim != 2 or vectors.shape[1] != width:
                raise ConfigError(
                    f"warm start item_factors has shape {vectors.shape}, the model needs {width} "
                    "columns; warm-start only from a two-tower version with the same dimensions"
                )
            # The exported last column is the bias times the temperature.
            vectors, bias = vectors[:, :-1], vectors[:, -1:] / self.config.temperature
        tables = {
            "item_factors": (net.item_tower.item_embedding, vectors),
            "item_bias": (net.item_tower.bias, bias),
            "history_embedding": (net.user_tower.history_embedding, warm.extra.get("history_embedding")),
        }
        for name, (layer, previous) in tables.items():
            if previous is None or layer is None:
                continue
            weights = layer.get_weights()[0]
            if previous.shape != weights.shape:
                raise ConfigError(
                    f"warm start {name} has shape {previous.shape}, the model needs {weights.shape}; "
                    "warm-start only from a two-tower version with the same dimensions"
                )
            weights[warm.known_items] = previous[warm.known_items]
            layer.set_weights([weights])

    def _export(self, train: sp.csr_matrix) -> None:
        """Item vectors for every item and user vectors for every training user.

        Items without training interactions (new in the catalogue) get vectors from their genres
        and titles alone: their id embedding never left its random start, so it would only add
        noise. Without features their vector is zero (no score either way). Their bias, which never
        trained either, is the median trained item's (:func:`new_item_bias`)."""
        tf = self._tf()
        net = self._net
        items = np.arange(train.shape[1], dtype=np.int32)
        untrained = np.bincount(train.indices, minlength=train.shape[1]) == 0
        self.item_factors = np.concatenate(
            [
                net.item_tower(tf.constant(block), features_only=tf.constant(untrained[block])).numpy()
                for block in _blocks(items, 8192)
            ]
        )
        if net.item_tower.bias is not None:
            bias = net.item_tower.bias.get_weights()[0][:, 0] * self.config.temperature
            if untrained.any() and not untrained.all():
                bias[untrained] = new_item_bias(bias, ~untrained)  # theirs never trained
            self.item_factors = np.concatenate([self.item_factors, bias[:, None]], axis=1)
        self.user_factors = self._user_vectors(train, with_ids=True)
        self._index = None

    def _user_vectors(self, rows: sp.csr_matrix, with_ids: bool) -> np.ndarray:
        from recsys.models.towers import ragged_rows

        tf = self._tf()
        net = self._net
        out = np.empty((rows.shape[0], self.config.dim), dtype=np.float32)
        for block in _blocks(np.arange(rows.shape[0]), 4096):
            history = ragged_rows(rows[block])
            users = tf.constant(block.astype(np.int32)) if with_ids else None
            attributes = None
            if with_ids and net.user_attributes is not None:
                attributes = tf.gather(net.user_attributes, users)
            out[block] = net.user_tower(history, users=users, attributes=attributes).numpy()
        if self.item_factors is not None and self.item_factors.shape[1] == out.shape[1] + 1:
            out = np.concatenate([out, np.ones((len(out), 1), np.float32)], axis=1)  # the item bias
        return out

    # --- fold-in and persistence ------------------------------------------------------------

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """New users through the user tower from their item history (no id or attributes)."""
        items = self._require_items()
        rows = _binary(user_items)
        if rows.shape[1] != len(items):
            raise ValueError(f"user_items must have {len(items)} columns, got {rows.shape[1]}")
        if self._net is None:
            self._load_net()
        return self._user_vectors(rows, with_ids=False)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        if self._shapes is None:
            return {}
        history = self._net.user_tower.history_embedding.get_weights()[0] if self._net else None
        extra = {"tower_shapes": self._shapes}
        if history is not None:
            extra["history_embedding"] = history
        return extra

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "tower_shapes" in arrays:
            self._shapes = arrays["tower_shapes"]

    def save(self, path: Path) -> None:
        if self._net is None and self._weights_path is not None:  # a loaded model saved again
            self._load_net()
        super().save(path)
        self._net.save_weights(str(path / WEIGHTS_DIR / "weights"))

    @classmethod
    def load(cls, path: Path) -> Self:
        model = super().load(path)
        model._weights_path = path / WEIGHTS_DIR / "weights"
        return model

    def _load_net(self) -> None:
        if self._weights_path is None:
            raise NotFittedError("the two-tower model has no Keras weights; fit() or load() it first")
        self._net = self._build_net()
        self._net.load_weights(str(self._weights_path)).expect_partial()

    @staticmethod
    def _tf() -> Any:
        from recsys.runtime.device import import_tensorflow

        return import_tensorflow()


def _binary(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """Every stored interaction counts as one positive (Protocol K)."""
    matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def new_item_bias(bias: np.ndarray, trained: np.ndarray, quantile: float = NEW_ITEM_BIAS_QUANTILE) -> float:
    """The bias given to items without interactions, whose own bias never trained: the
    ``quantile`` of the ``trained`` items' learned ``bias`` (the median by default).

    The lowest bias kept new items out of every whole-catalogue list; a typical item's lets them
    surface for the users their feature vectors match. Higher quantiles and a bias predicted from
    the features surfaced them more but crowded out trained items users go on to choose (Protocol
    K nDCG@10 on ml-100k 0.436 -> 0.428; docs/benchmarks.md, "The bias of a new item")."""
    return float(np.quantile(bias[trained], quantile))


def _blocks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _multi_hot(values: list[list[str]], expected: int, name: str) -> np.ndarray:
    if len(values) != expected:
        raise DataError(f"features[{name!r}] has {len(values)} rows, expected {expected} (one per index)")
    vocabulary = {token: column for column, token in enumerate(sorted({v for row in values for v in row}))}
    matrix = np.zeros((expected, len(vocabulary)), dtype=np.float32)
    rows = np.repeat(np.arange(expected), [len(row) for row in values])
    cols = np.fromiter((vocabulary[v] for row in values for v in row), dtype=np.int64, count=len(rows))
    matrix[rows, cols] = 1.0
    return matrix


def _prepare_features(
    features: dict[str, Any], n_users: int, n_items: int, config: TwoTowerConfig
) -> dict[str, Any]:
    """Multi-hot genres and user attributes, hashed title tokens; zeros when absent."""
    from recsys.models.towers import tf

    item: dict[str, Any] = {}
    n_genres = n_title_bins = n_attrs = 0
    if config.use_item_features and features.get("item_genres") is not None:
        genres = _multi_hot(list(features["item_genres"]), n_items, "item_genres")
        if genres.shape[1]:
            item["genres"], n_genres = genres, genres.shape[1]
    if config.use_item_features and features.get("item_titles") is not None:
        titles = list(features["item_titles"])
        if len(titles) != n_items:
            raise DataError(f"features['item_titles'] has {len(titles)} rows, expected {n_items}")
        # crc32, not hash(): Python salts str hashes per process, and bins must be stable.
        tokens = [
            [zlib.crc32(t.encode()) % config.title_bins for t in _TOKEN.findall(str(title).lower())]
            for title in titles
        ]
        lengths = np.array([len(row) for row in tokens], dtype=np.int64)
        flat = np.fromiter((t for row in tokens for t in row), dtype=np.int32, count=int(lengths.sum()))
        item["titles"] = tf.RaggedTensor.from_row_lengths(flat, lengths)
        n_title_bins = config.title_bins
    user_attributes = None
    if features.get("user_attributes") is not None:
        attributes = _multi_hot(list(features["user_attributes"]), n_users, "user_attributes")
        if attributes.shape[1]:
            user_attributes, n_attrs = tf.constant(attributes), attributes.shape[1]
    return {
        "item": item,
        "user_attributes": user_attributes,
        "n_genres": n_genres,
        "n_title_bins": n_title_bins,
        "n_attrs": n_attrs,
    }


class _TowerEpochs:
    """The epoch step of the two-tower model: one shuffled pass over the training pairs."""

    def __init__(
        self,
        model: TwoTower,
        train: sp.csr_matrix,
        optimizer: Any,
        train_epoch: Callable[[int], dict[str, float]],
    ) -> None:
        self.model, self.train, self.optimizer = model, train, optimizer
        self.train_epoch = train_epoch

    def export(self) -> None:
        self.model._export(self.train)

    def state(self) -> dict[str, np.ndarray]:
        net = self.model._net
        arrays = {f"weight_{i}": value for i, value in enumerate(net.get_weights())}
        arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        # The negative and dropout sampler's state: a resumed fit draws what an uninterrupted one would.
        arrays["sampler"] = net.sampler.state.numpy()
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        net = self.model._net
        net.set_weights([arrays[f"weight_{i}"] for i in range(len(net.get_weights()))])
        net.sampler.state.assign(arrays["sampler"])
        for i, variable in enumerate(self.optimizer.variables):
            variable.assign(arrays[f"optimizer_{i}"])
