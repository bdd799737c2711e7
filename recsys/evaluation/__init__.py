"""Metrics and offline evaluation (docs/protocol.md)."""

from recsys.evaluation.metrics import coverage, mae, ranking_metrics, rmse
from recsys.evaluation.ranking import evaluate_ranking, recommend_top_k
from recsys.evaluation.rating import evaluate_rating, predict_ratings

__all__ = [
    "coverage",
    "evaluate_ranking",
    "evaluate_rating",
    "mae",
    "predict_ratings",
    "ranking_metrics",
    "recommend_top_k",
    "rmse",
]
