"""Training job for schedulers (cron, Airflow, Kubernetes jobs): one model version per run.

Holds the database lock ``training`` for the run, so two scheduled runs never train at the same
time; ``python -m pipelines.train --model ials --param factors=64 --promote``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from recsys.db import ensure_current, get_engine
from recsys.registry.registry import VersionInfo
from recsys.settings import Settings, get_settings
from recsys.training.locks import DatabaseLock
from recsys.training.trainer import parse_param_options, train

#: Name of the lock a training job holds.
TRAINING_LOCK = "training"


def run_training(
    settings: Settings,
    model_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    promote: bool = False,
) -> VersionInfo:
    """Train and register one version while holding the training lock."""
    engine = get_engine(settings.database_url)
    ensure_current(engine)
    with DatabaseLock(engine, TRAINING_LOCK, stale_after=settings.lock_stale_seconds):
        return train(engine, settings, model_name, params, kinds=kinds, promote=promote)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True)
    parser.add_argument("--param", action="append", default=[], help="key=value (repeatable)")
    parser.add_argument("--kinds", action="append", default=None)
    parser.add_argument("--promote", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    info = run_training(
        settings, args.model, parse_param_options(args.param), kinds=args.kinds, promote=args.promote
    )
    print(info.version)


if __name__ == "__main__":
    main()
