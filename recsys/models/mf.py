"""Explicit matrix factorization for ratings: global mean + user bias + item bias + p_u . q_i.

The loss is the squared error over the observed ratings only, plus L2 on the factors and biases
of the pairs in each mini-batch (so frequent users and items are regularised in proportion to
how often they appear, as in Funk's SGD). Training is mini-batch gradient descent in TensorFlow
over a tf.data pipeline, under the distribution strategy of :mod:`recsys.runtime.device`.

For top-k retrieval the vectors are augmented so that the inner product is the predicted rating:
user ``[p_u, 1, mu + b_u]`` and item ``[q_i, b_i, 1]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.recipe import Recipe
from recsys.errors import ConfigError, DataError, NotFittedError
from recsys.models.base import EpochConfig, FitOptions, ModelConfig, Recommender, SearchRange, WarmStart
from recsys.runtime.device import distribution_strategy, import_tensorflow, use_mixed_precision

logger = logging.getLogger(__name__)

#: Floats the padded fold-in block may hold (2^24 floats = 64 MB).
FOLD_IN_BLOCK_FLOATS = 1 << 24


class MatrixFactorizationConfig(EpochConfig):
    """Hyper-parameters of explicit MF. Defaults were tuned on a validation carve-out of the
    Protocol R train part of ml-100k: SGD with
    momentum at a constant step beat Adam there (validation RMSE 0.910 against 0.918)."""

    factors: int = Field(default=128, ge=1)
    """Length of p_u and q_i."""
    epochs: int = Field(default=25, ge=1)
    """Passes over the ratings; the maximum when early stopping on validation RMSE."""
    smoothing: int = Field(default=1, ge=1)
    """No smoothing: RMSE over every held-out rating moves smoothly from epoch to epoch, and a
    trailing mean would only choose an epoch past the minimum of an overfitting curve."""
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1.0, gt=0)
    """Initial step size; a cosine schedule lowers it to ``learning_rate * final_lr_fraction``.
    The loss is the batch mean, so plain SGD needs a step about batch_size times Funk's per-rating one."""
    final_lr_fraction: float = Field(default=1.0, ge=0, le=1)
    optimizer: Literal["adam", "adagrad", "sgd"] = "sgd"
    """Adam; Adagrad and plain SGD update only the rows in the batch (sparse updates)."""
    momentum: float = Field(default=0.9, ge=0, lt=1)
    """Momentum of the ``sgd`` optimizer."""
    regularization: float = Field(default=0.08, ge=0)
    """L2 weight on p_u and q_i, per rating in the batch."""
    bias_regularization: float = Field(default=0.05, ge=0)
    """L2 weight on b_u and b_i, per rating in the batch."""
    init_scale: float = Field(default=0.01, gt=0)
    """Standard deviation of the initial factors (biases start at zero)."""
    mixed_precision: bool = False
    """float16 compute on GPUs (ignored on the CPU, where it is slower)."""


class MatrixFactorization(Recommender):
    """Biased matrix factorization of explicit ratings (also ranks by predicted rating)."""

    stopping_metric = ("val_rmse", "min")
    name = "mf"
    Config = MatrixFactorizationConfig
    recipe = Recipe(values="raw")  # learns the ratings themselves
    predicts_ratings = True
    uses_catalog = False
    search_space = (
        SearchRange("factors", 16, 256, log=True, integer=True),
        SearchRange("regularization", 1e-3, 0.3, log=True),
        SearchRange("bias_regularization", 1e-4, 0.1, log=True),
        SearchRange("learning_rate", 3e-4, 3e-2, log=True),
    )
    epoch_limit = "epochs"
    engines = ("local", "tf_config")
    config: MatrixFactorizationConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.global_mean = 0.0
        self.user_bias: np.ndarray | None = None
        self.item_bias: np.ndarray | None = None
        self._user_p: np.ndarray | None = None
        self._item_q: np.ndarray | None = None

    # --- training ---------------------------------------------------------------------------------

    def fit(self, user_items: sp.csr_matrix, options: FitOptions | None = None) -> Self:
        options = options or FitOptions()
        config = self.config
        tf = import_tensorflow()
        import tf_keras

        ratings = sp.coo_matrix(user_items, dtype=np.float32)
        if ratings.nnz == 0:
            raise DataError("explicit MF needs at least one rating; the training matrix is empty")
        n_users, n_items = ratings.shape
        total = options.epochs if options.epochs is not None else config.epochs
        self.global_mean = float(ratings.data.mean())
        initial = self._initial_arrays(n_users, n_items, options.warm_start)

        use_mixed_precision(config.mixed_precision)
        strategy = distribution_strategy()
        steps_per_epoch = -(-ratings.nnz // config.batch_size)
        with strategy.scope():
            variables = {key: tf.Variable(value, name=key) for key, value in initial.items()}
            # The schedule spans the configured epochs even when FitOptions.epochs stops earlier, so
            # a refit for the epochs early stopping chose retraces the validation run's steps.
            schedule = tf_keras.optimizers.schedules.CosineDecay(
                config.learning_rate,
                decay_steps=steps_per_epoch * max(total, config.epochs),
                alpha=config.final_lr_fraction,
            )
            optimizer = {
                "adam": lambda: tf_keras.optimizers.Adam(schedule),
                "adagrad": lambda: tf_keras.optimizers.Adagrad(schedule),
                "sgd": lambda: tf_keras.optimizers.SGD(schedule, momentum=config.momentum),
            }[config.optimizer]()
            optimizer.build(list(variables.values()))
        run_epoch = self._epoch_function(strategy, variables, optimizer, ratings.nnz)

        def train_epoch(epoch: int) -> dict[str, float]:
            dataset = self._dataset(ratings, seed=config.seed + epoch)
            loss_sum, squared_error = run_epoch(strategy.experimental_distribute_dataset(dataset))
            return {
                "loss": float(loss_sum) / ratings.nnz,
                "rmse": float(np.sqrt(float(squared_error) / ratings.nnz)),
            }

        self._run_epochs(_Passes(self, variables, optimizer, train_epoch), options, limit=config.epochs)
        return self

    def _dataset(self, ratings: sp.coo_matrix, seed: int) -> Any:
        """Shuffled mini-batches of (user, item, rating); the order depends only on ``seed``, so a
        resumed fit sees the same batches an uninterrupted one would."""
        tf = import_tensorflow()
        order = np.random.default_rng(seed).permutation(ratings.nnz)
        dataset = tf.data.Dataset.from_tensor_slices(
            (ratings.row[order].astype(np.int32), ratings.col[order].astype(np.int32), ratings.data[order])
        )
        return dataset.batch(self.config.batch_size).prefetch(tf.data.AUTOTUNE)

    def _epoch_function(
        self, strategy: Any, variables: dict[str, Any], optimizer: Any, n_ratings: int
    ) -> Any:
        """A compiled pass over a distributed dataset; returns (summed loss, summed squared error)."""
        tf = import_tensorflow()
        config, mean = self.config, self.global_mean
        trainable = list(variables.values())
        mirrored = strategy.num_replicas_in_sync > 1

        def step(users, items, ratings):
            with tf.GradientTape() as tape:
                p = tf.gather(variables["user_p"], users)
                q = tf.gather(variables["item_q"], items)
                bu = tf.gather(variables["user_bias"], users)
                bi = tf.gather(variables["item_bias"], items)
                error = ratings - (mean + bu + bi + tf.reduce_sum(p * q, axis=1))
                penalty = config.regularization * (
                    tf.reduce_sum(p * p, axis=1) + tf.reduce_sum(q * q, axis=1)
                ) + config.bias_regularization * (bu * bu + bi * bi)
                per_rating = tf.square(error) + penalty
                loss = tf.nn.compute_average_loss(per_rating, global_batch_size=config.batch_size)
            gradients = tape.gradient(loss, trainable)
            if mirrored:  # replicas' sparse gradients differ in shape on the last batch; sum them dense
                gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]
            optimizer.apply_gradients(zip(gradients, trainable, strict=True))
            return tf.reduce_sum(per_rating), tf.reduce_sum(tf.square(error))

        @tf.function
        def run_epoch(dataset):
            loss_sum = tf.constant(0.0)
            squared = tf.constant(0.0)
            for users, items, ratings in dataset:
                loss_part, squared_part = strategy.run(step, args=(users, items, ratings))
                loss_sum += strategy.reduce("SUM", loss_part, axis=None)
                squared += strategy.reduce("SUM", squared_part, axis=None)
            return loss_sum, squared

        return run_epoch

    def _initial_arrays(
        self, n_users: int, n_items: int, warm_start: WarmStart | None
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.config.seed)
        f = self.config.factors
        arrays = {
            "user_p": (rng.standard_normal((n_users, f)) * self.config.init_scale).astype(np.float32),
            "item_q": (rng.standard_normal((n_items, f)) * self.config.init_scale).astype(np.float32),
            "user_bias": np.zeros(n_users, np.float32),
            "item_bias": np.zeros(n_items, np.float32),
        }
        if warm_start is not None:
            # The warm-start vectors are the augmented ones: [p_u, 1, mu + b_u] and [q_i, b_i, 1].
            for side, known, old in (
                ("user", warm_start.known_users, warm_start.user_factors),
                ("item", warm_start.known_items, warm_start.item_factors),
            ):
                vectors = arrays["user_p" if side == "user" else "item_q"]
                if old.shape != (len(vectors), f + 2) or len(known) != len(vectors):
                    raise ConfigError(
                        f"warm-start {side} vectors have shape {old.shape}, expected "
                        f"{(len(vectors), f + 2)}; the factors setting must match the previous version"
                    )
                vectors[known] = old[known, :f]
            old_mean = float(warm_start.extra.get("global_mean", np.array(self.global_mean)))
            known_u = warm_start.known_users
            arrays["user_bias"][known_u] = warm_start.user_factors[known_u, f + 1] - old_mean
            arrays["item_bias"][warm_start.known_items] = warm_start.item_factors[warm_start.known_items, f]
        return arrays

    # --- state --------------------------------------------------------------------------------------

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_p, self._item_q = arrays["user_p"], arrays["item_q"]
        self.user_bias, self.item_bias = arrays["user_bias"], arrays["item_bias"]
        self.user_factors = self._augment_users(self._user_p, self.user_bias)
        ones = np.ones((len(self._item_q), 1), np.float32)
        self.item_factors = np.hstack([self._item_q, self.item_bias[:, None], ones]).astype(np.float32)
        self._index = None

    def _augment_users(self, p: np.ndarray, bias: np.ndarray) -> np.ndarray:
        ones = np.ones((len(p), 1), np.float32)
        return np.hstack([p, ones, (self.global_mean + bias)[:, None]]).astype(np.float32)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"global_mean": np.array(self.global_mean, dtype=np.float64)}

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.global_mean = float(arrays["global_mean"])
        f = self.config.factors
        users, items = self.user_factors, self._require_items()
        self._item_q, self.item_bias = items[:, :f], items[:, f]
        if users is not None:
            self._user_p, self.user_bias = users[:, :f], users[:, f + 1] - self.global_mean

    @property
    def similarity_factors(self) -> np.ndarray:
        """Only q_i: the bias columns would make popular items similar to everything."""
        self._require_items()
        assert self._item_q is not None
        return self._item_q

    # --- prediction ---------------------------------------------------------------------------------

    def predict(
        self, user_index: np.ndarray, item_index: np.ndarray, clip: tuple[float, float] | None = None
    ) -> np.ndarray:
        """Predicted ratings of (user, item) pairs. Index ``-1`` (or beyond the trained ones)
        means unknown: its bias and vector count as zero, so an unknown user gets the global mean
        plus the item's bias, and an unknown pair the global mean."""
        if self._item_q is None or self._user_p is None or self.user_bias is None or self.item_bias is None:
            raise NotFittedError("the mf model is not fitted; call fit() or load()")
        users = np.asarray(user_index, dtype=np.int64)
        items = np.asarray(item_index, dtype=np.int64)
        if users.shape != items.shape:
            raise ValueError(
                f"user_index and item_index must have the same shape, got {users.shape} and {items.shape}"
            )
        known_u = (users >= 0) & (users < len(self._user_p))
        known_i = (items >= 0) & (items < len(self._item_q))
        safe_u, safe_i = np.where(known_u, users, 0), np.where(known_i, items, 0)
        dot = np.einsum("nf,nf->n", self._user_p[safe_u], self._item_q[safe_i])
        predicted = (
            self.global_mean
            + np.where(known_u, self.user_bias[safe_u], 0.0)
            + np.where(known_i, self.item_bias[safe_i], 0.0)
            + np.where(known_u & known_i, dot, 0.0)
        )
        if clip is not None:
            predicted = np.clip(predicted, *clip)
        return predicted.astype(np.float64)

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Augmented vectors of new users from their ratings: the ridge solve of ``rating - mu - b_i``
        on ``[q_i, 1]`` (factors and user bias together), with the fit's per-rating L2 weights."""
        if self._item_q is None or self.item_bias is None:
            raise NotFittedError("the mf model is not fitted; call fit() or load()")
        rows = sp.csr_matrix(user_items, dtype=np.float32)
        rows.eliminate_zeros()
        if rows.shape[1] != len(self._item_q):
            raise DataError(f"user_items must have {len(self._item_q)} columns, got {rows.shape[1]}")
        f = self.config.factors
        features = np.hstack([self._item_q, np.ones((len(self._item_q), 1), np.float32)]).astype(np.float64)
        penalty = np.full(f + 1, self.config.regularization)
        penalty[f] = self.config.bias_regularization
        counts = np.diff(rows.indptr)
        order = np.argsort(counts, kind="stable")
        solution = np.zeros((rows.shape[0], f + 1))
        start = 0
        while start < len(order):  # blocks of users sorted by history length, padded to the longest
            stop = len(order)
            while (
                stop - start > 1
                and (stop - start) * max(1, counts[order[stop - 1]]) * (f + 1) > FOLD_IN_BLOCK_FLOATS
            ):
                stop = start + (stop - start) // 2
            block = rows[order[start:stop]]
            lengths = np.diff(block.indptr)
            width = max(1, int(lengths.max()))
            owner = np.repeat(np.arange(len(lengths)), lengths)
            slot = np.arange(block.nnz) - block.indptr[owner]
            padded = np.zeros((len(lengths), width, f + 1))
            target = np.zeros((len(lengths), width))
            padded[owner, slot] = features[block.indices]
            target[owner, slot] = block.data - self.global_mean - self.item_bias[block.indices]
            system = np.einsum("blf,blg->bfg", padded, padded)
            system += np.maximum(lengths, 1)[:, None, None] * np.diag(penalty)[None]
            rhs = np.einsum("blf,bl->bf", padded, target)
            solution[order[start:stop]] = np.linalg.solve(system, rhs[:, :, None])[:, :, 0]
            start = stop
        return self._augment_users(solution[:, :f].astype(np.float32), solution[:, f].astype(np.float32))


class _Passes:
    """The epoch step of explicit MF: one shuffled pass of mini-batches over the ratings."""

    def __init__(
        self,
        model: MatrixFactorization,
        variables: dict[str, Any],
        optimizer: Any,
        train_epoch: Callable[[int], dict[str, float]],
    ) -> None:
        self.model, self.variables, self.optimizer = model, variables, optimizer
        self.train_epoch = train_epoch

    def export(self) -> None:
        self.model._set_arrays({key: value.numpy() for key, value in self.variables.items()})

    def state(self) -> dict[str, np.ndarray]:
        arrays = {key: value.numpy() for key, value in self.variables.items()}
        arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for key, variable in self.variables.items():
            variable.assign(arrays[key])
        for i, variable in enumerate(self.optimizer.variables):
            variable.assign(arrays[f"optimizer_{i}"])
