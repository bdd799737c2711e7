"""Metrics and offline evaluation (shared/BENCHMARK_PROTOCOL.md)."""

from recsys.evaluation.metrics import coverage, mae, ranking_metrics, rmse
from recsys.evaluation.ranking import evaluate_ranking

__all__ = ["coverage", "evaluate_ranking", "mae", "ranking_metrics", "rmse"]
