"""Keras layers of the two-tower model (imported only when a two-tower model trains or folds in).

The user tower follows YouTube DNN (Covington et al. 2016): the user is the average of the
embeddings of the items in their history, passed through a small MLP. The item tower is an id
embedding plus optional genre and title-token features. Both towers end in an L2-normalised
vector so that a temperature sets the sharpness of the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

import recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from recsys.runtime.device import import_tensorflow

tf = import_tensorflow()
import tensorflow_recommenders as tfrs  # noqa: E402
import tf_keras  # noqa: E402


@dataclass
class TowerShapes:
    """Sizes the Keras layers are built with; saved with the model so that it can be rebuilt."""

    n_users: int
    n_items: int
    n_genres: int
    n_title_bins: int
    n_user_attributes: int


def ragged_rows(matrix: sp.csr_matrix) -> Any:
    """The column indices of each CSR row as a ``tf.RaggedTensor`` (one history per row)."""
    matrix = sp.csr_matrix(matrix)
    return tf.RaggedTensor.from_row_splits(
        tf.constant(matrix.indices.astype(np.int32)),
        tf.constant(matrix.indptr.astype(np.int64)),
        validate=False,
    )


class ItemTower(tf_keras.layers.Layer):
    """Item index -> normalised vector from its id embedding plus genre and title features."""

    def __init__(
        self,
        shapes: TowerShapes,
        dim: int,
        l2: float,
        normalize: bool,
        features: dict[str, Any],
        bias: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize
        # A per-item term added to the logits (popularity): cosine scores over a temperature
        # span too narrow a range to carry it in the vectors. Exported as one more dimension.
        self.bias = (
            tf.keras.layers.Embedding(shapes.n_items, 1, embeddings_initializer="zeros", name="item_bias")
            if bias
            else None
        )
        regulariser = tf.keras.regularizers.l2(l2) if l2 > 0 else None
        self.item_embedding = tf.keras.layers.Embedding(
            shapes.n_items, dim, embeddings_regularizer=regulariser, name="item_embedding"
        )
        # Features start at zero so that a warm-started id embedding alone gives the old vectors.
        self.genres = features.get("genres")  # (n_items, n_genres) float32 constant
        self.genre_projection = (
            tf.keras.layers.Dense(dim, use_bias=False, kernel_initializer="zeros", name="genres")
            if shapes.n_genres
            else None
        )
        self.titles = features.get("titles")  # ragged (n_items, None) token bins
        self.title_embedding = (
            tf.keras.layers.Embedding(
                shapes.n_title_bins, dim, embeddings_initializer="zeros", name="title_tokens"
            )
            if shapes.n_title_bins
            else None
        )

    def raw(self, items: Any, with_ids: Any = None) -> Any:
        """Id embedding plus features; where the boolean ``with_ids`` (one per item) is false,
        the features alone."""
        vectors = self.item_embedding(items)
        if with_ids is not None:
            vectors *= tf.cast(with_ids, tf.float32)[:, None]
        if self.genre_projection is not None and self.genres is not None:
            vectors += self.genre_projection(tf.gather(self.genres, items))
        if self.title_embedding is not None and self.titles is not None:
            tokens = tf.gather(self.titles, items)
            summed = tf.reduce_sum(tf.ragged.map_flat_values(self.title_embedding, tokens), axis=1)
            counts = tf.cast(tokens.row_lengths(), tf.float32)
            vectors += summed / tf.maximum(counts, 1.0)[:, None]  # an empty title adds nothing
        return vectors

    def call(self, items: Any, features_only: Any = None) -> Any:
        """The items' vectors; where the boolean ``features_only`` (one per item) is true, from the
        features alone (items without training interactions: their id embedding never moved
        from its random start)."""
        vectors = self.raw(items, None if features_only is None else tf.logical_not(features_only))
        return tf.math.l2_normalize(vectors, axis=-1) if self.normalize else vectors

    def logit_bias(self, items: Any) -> Any:
        """Each item's bias in logit units (zeros without one)."""
        if self.bias is None:
            return tf.zeros(tf.shape(items), tf.float32)
        return self.bias(items)[:, 0]


class UserTower(tf_keras.layers.Layer):
    """A user's history (ragged item indices) -> normalised vector, through mean pooling and an MLP."""

    def __init__(
        self,
        shapes: TowerShapes,
        dim: int,
        hidden: int,
        l2: float,
        use_user_id: bool,
        normalize: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize
        regulariser = tf.keras.regularizers.l2(l2) if l2 > 0 else None
        # A separate input table, as in YouTube DNN: what an item says about a user who watched
        # it is not the same vector as what makes the item a good recommendation.
        self.history_embedding = tf.keras.layers.Embedding(
            shapes.n_items, hidden, embeddings_regularizer=regulariser, name="history_embedding"
        )
        self.history_embedding.build((None,))  # pooled() reads the table directly
        self.user_embedding = (
            tf.keras.layers.Embedding(
                shapes.n_users, hidden, embeddings_initializer="zeros", name="user_embedding"
            )
            if use_user_id
            else None
        )
        self.attribute_projection = (
            tf.keras.layers.Dense(hidden, use_bias=False, kernel_initializer="zeros", name="attributes")
            if shapes.n_user_attributes
            else None
        )
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu", name="hidden")
        self.output_layer = tf.keras.layers.Dense(dim, use_bias=False, name="output")

    def pooled(self, history: Any, keep: Any = None) -> Any:
        """Sum of the history embeddings over the entries where ``keep`` is true (all when None),
        divided by the square root of their count."""
        table = self.history_embedding.embeddings
        rows = history.value_rowids()
        weights = tf.ones_like(history.flat_values, dtype=tf.float32)
        values = history.flat_values
        if keep is not None:
            # Dropped entries leave the product entirely (not just weight 0): that is the saving.
            rows, values, weights = (tf.boolean_mask(t, keep) for t in (rows, values, weights))
        # A sparse-dense product gives the table a dense gradient: on catalogues of this size
        # one dense Adam update is several times faster than a scatter of every history row.
        bag = tf.SparseTensor(
            indices=tf.stack([rows, tf.cast(values, tf.int64)], axis=1),
            values=weights,
            dense_shape=tf.stack([history.nrows(), tf.cast(tf.shape(table)[0], tf.int64)]),
        )
        summed = tf.sparse.sparse_dense_matmul(bag, table)
        counts = tf.math.unsorted_segment_sum(weights, rows, history.nrows())
        return summed / tf.sqrt(tf.maximum(counts, 1.0))[:, None]

    def call(
        self,
        history: Any,
        users: Any = None,
        attributes: Any = None,
        keep: Any = None,
    ) -> Any:
        hidden = self.pooled(history, keep)
        if self.user_embedding is not None and users is not None:
            hidden += self.user_embedding(users)
        if self.attribute_projection is not None and attributes is not None:
            hidden += self.attribute_projection(attributes)
        vectors = self.output_layer(self.hidden(hidden))
        return tf.math.l2_normalize(vectors, axis=-1) if self.normalize else vectors


class TwoTowerNet(tfrs.Model):
    """Both towers and the training objective; ``compute_loss`` is the whole of it.

    A batch is a set of users. Each user's history, with a random share dropped, gives one user
    vector, and the loss is the softmax likelihood of the user's items among the candidates
    (Mult-DAE, Liang et al. 2018), weighted towards the dropped items, which the user vector did
    not see: the task at serving time is to rank items outside the history. The candidates are
    every item for catalogues up to ``full_softmax_items``; above that, the batch's own items
    plus ``n_negatives`` uniform ones (mixed negatives), their logits corrected by the log of
    each candidate's sampling probability (log-Q) when ``log_q``.
    """

    def __init__(
        self,
        shapes: TowerShapes,
        *,
        dim: int,
        hidden: int,
        l2: float,
        use_user_id: bool,
        temperature: float,
        normalize: bool,
        n_negatives: int,
        history_dropout: float,
        max_history: int,
        seed: int,
        full_softmax_items: int = 0,
        seen_target_weight: float = 0.0,
        item_bias: bool = False,
        trained_items: np.ndarray | None = None,
        histories: Any = None,
        item_probability: np.ndarray | None = None,
        item_features: dict[str, Any] | None = None,
        user_attributes: Any = None,
    ) -> None:
        super().__init__()
        self.shapes = shapes
        self.temperature = temperature
        self.n_negatives = n_negatives
        self.history_dropout = history_dropout
        self.max_history = float(max_history)
        self.full_softmax = shapes.n_items <= full_softmax_items
        self.seen_target_weight = seen_target_weight
        self.log_q = item_probability is not None
        self.histories = histories
        self.user_attributes = user_attributes
        self.item_tower = ItemTower(
            shapes, dim, l2, normalize, item_features or {}, bias=item_bias, name="item_tower"
        )
        self.user_tower = UserTower(shapes, dim, hidden, l2, use_user_id, normalize, name="user_tower")
        # Keras resets metrics every epoch: this one is the epoch's mean loss per user.
        self.epoch_loss = tf.keras.metrics.Mean(name="epoch_loss")
        probability = (
            np.full(shapes.n_items, 1.0 / shapes.n_items) if item_probability is None else item_probability
        )
        self.item_probability = tf.constant(probability.astype(np.float32))
        # Only items with interactions are candidates: an item nobody chose would only learn to be
        # far from everyone, and its features (the cold-start path) must place it instead.
        trained = np.arange(shapes.n_items) if trained_items is None else trained_items
        column = np.full(shapes.n_items, -1, dtype=np.int32)
        column[trained] = np.arange(len(trained), dtype=np.int32)
        self.trained_items = tf.constant(trained.astype(np.int32))
        self.trained_column = tf.constant(column)
        # The generator's state is a variable, so checkpoints carry it and a resume is exact.
        self.sampler = tf.random.Generator.from_seed(seed)

    def build_towers(self) -> None:
        """Create every weight (Keras builds lazily) so that weights can be loaded or copied."""
        empty = tf.RaggedTensor.from_row_splits(tf.zeros([1], tf.int32), tf.constant([0, 1], tf.int64))
        self.item_tower(tf.zeros([1], tf.int32))
        self.item_tower.logit_bias(tf.zeros([1], tf.int32))
        users = tf.zeros([1], tf.int32)
        attributes = tf.zeros([1, self.shapes.n_user_attributes]) if self.shapes.n_user_attributes else None
        self.user_tower(empty, users=users, attributes=attributes)

    def query(self, users: Any, history: Any) -> tuple[Any, Any]:
        """User vectors of a training batch from their histories with a random share dropped
        (denoising, as in Mult-DAE, so the tower cannot memorise users); also the keep mask."""
        attributes = None if self.user_attributes is None else tf.gather(self.user_attributes, users)
        # Each entry is kept with the dropout's probability, lowered for long histories so that
        # about ``max_history`` remain: a user's cost grows with the history pooled.
        lengths = tf.cast(history.row_lengths(), tf.float32)
        keep_share = (1.0 - self.history_dropout) * tf.minimum(
            1.0, self.max_history / tf.maximum(lengths, 1.0)
        )
        draws = self.sampler.uniform(tf.shape(history.flat_values))
        keep = draws < tf.gather(keep_share, history.value_rowids())
        queries = self.user_tower(history, users=users, attributes=attributes, keep=keep)
        return queries, keep

    def candidates(self, positives: Any) -> tuple[Any, Any, Any]:
        """Candidate item ids, their logit corrections and each positive's column among them."""
        if self.full_softmax:
            return self.trained_items, None, tf.gather(self.trained_column, positives)
        unique, columns = tf.unique(positives)
        ids = unique
        if self.n_negatives:
            # Mixed negative sampling (Yang et al. 2020): uniform items add the long tail that
            # the batch's own items, drawn by popularity, almost never show.
            draws = self.sampler.uniform([self.n_negatives], 0, tf.size(self.trained_items), dtype=tf.int32)
            extra = tf.gather(self.trained_items, draws)
            ids = tf.concat([unique, extra], axis=0)
        if not self.log_q:
            return ids, None, columns
        # log-Q: the chance of each candidate under the mixed sampler (positives by popularity).
        drawn = tf.cast(tf.size(positives), tf.float32)
        uniform = 1.0 / tf.cast(tf.size(self.trained_items), tf.float32)
        share = tf.gather(self.item_probability, ids)
        q = 1.0 - tf.pow(1.0 - share, drawn) + self.n_negatives * uniform
        return ids, tf.math.log(tf.minimum(q, 1.0)), columns

    def compute_loss(self, inputs: dict[str, Any], training: bool = False) -> Any:
        users = inputs["user"]
        history = tf.gather(self.histories, users)
        queries, keep = self.query(users, history)
        positives = history.flat_values
        ids, correction, columns = self.candidates(positives)
        logits = tf.matmul(queries, self.item_tower(ids), transpose_b=True) / self.temperature
        logits += self.item_tower.logit_bias(ids)[None, :]
        if correction is not None:
            logits -= correction[None, :]
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        rows = history.value_rowids()
        picked = tf.gather_nd(log_probs, tf.stack([tf.cast(rows, tf.int32), columns], axis=1))
        # Items the user vector saw count ``seen_target_weight``; the dropped ones count fully.
        weights = tf.where(keep, self.seen_target_weight, 1.0)
        loss = -tf.reduce_sum(weights * picked)
        self.epoch_loss.update_state(loss / tf.cast(tf.shape(users)[0], tf.float32))
        return loss  # a sum over the batch, so that replicas' gradients add up to the global batch
