"""Training job for schedulers (cron, Airflow, Kubernetes jobs): one model version per run.

Holds the database lock ``training`` for the run, so two scheduled runs never train at the same
time; ``python -m pipelines.train --model ials --param factors=64 --promote``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from recsys.cli.data import parse_kinds, parse_weights
from recsys.data.recipe import COMBINE_RULES
from recsys.db import ensure_current, get_engine
from recsys.registry.registry import VersionInfo
from recsys.settings import Settings, get_settings
from recsys.training.locks import DatabaseLock
from recsys.training.trainer import parse_param_options, train

#: Name of the lock a training job holds.
TRAINING_LOCK = "training"


def run_training(
    settings: Settings,
    model_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    combine: str | None = None,
    promote: bool = False,
) -> VersionInfo:
    """Train and register one version while holding the training lock (``recsys train``'s path;
    ``model_name`` defaults to RECSYS_DEFAULT_MODEL, the recipe overrides to the model's own)."""
    engine = get_engine(settings.database_url)
    ensure_current(engine)
    with DatabaseLock(engine, TRAINING_LOCK, stale_after=settings.lock_stale_seconds):
        return train(
            engine,
            settings,
            model_name,
            params,
            kinds=kinds,
            weights=weights,
            combine=combine,
            promote=promote,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=None, help="default: RECSYS_DEFAULT_MODEL")
    parser.add_argument("--param", action="append", default=[], help="key=value (repeatable)")
    parser.add_argument("--kinds", action="append", default=None)
    parser.add_argument("--weight", action="append", default=[], help="KIND=W (repeatable)")
    parser.add_argument("--combine", choices=COMBINE_RULES, default=None)
    parser.add_argument("--promote", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    info = run_training(
        settings,
        args.model,
        parse_param_options(args.param),
        kinds=parse_kinds(args.kinds),
        weights=parse_weights(args.weight),
        combine=args.combine,
        promote=args.promote,
    )
    print(info.version)


if __name__ == "__main__":
    main()
