"""The Ray cluster that distributed jobs run on: connect to one, or start one on this machine.

Ray is an optional extra (``pip install 'recsys[distributed]'``) and is imported only when a job
asks for the ``ray`` engine, never by ``recsys --help``, the service or local training.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from recsys.errors import ConfigError
from recsys.settings import get_settings

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide a distributed job runs.

    ``address`` is a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None uses
    ``RAY_ADDRESS`` when it is set, else starts a Ray on this machine for the job and stops it
    after. ``workers`` is the number of Ray actors that share the work (None: one per CPU the
    cluster has).
    """

    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")


def engine_from_options(
    engine: str, address: str | None = None, workers: int | None = None
) -> RayEngine | None:
    """The engine a command line asked for: None for ``local``, a :class:`RayEngine` for ``ray``."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        if address is not None or workers is not None:
            raise ConfigError("--address and --workers need --engine ray")
        return None
    return RayEngine(address=address, workers=workers)


def import_ray() -> ModuleType:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the ray engine needs Ray: pip install 'recsys[distributed]' (or pip install 'ray[default]')"
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(engine: RayEngine) -> Iterator[ModuleType]:
    """Ray, connected to ``engine``'s cluster for the duration of the block.

    A Ray this process already joined is used as it is. A Ray started here (no address, no
    ``RAY_ADDRESS``) gets ``RECSYS_RAY_NUM_CPUS`` CPUs and a ``RECSYS_RAY_OBJECT_STORE_MB`` object
    store (0: Ray's defaults, all cores and 30% of the memory) and is shut down on leaving.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = engine.address or os.environ.get("RAY_ADDRESS") or None
    settings = get_settings()
    if address is not None:
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        logger.info("starting a local Ray for this job")
        ray.init(
            address="local",  # a new Ray, even when one started by `ray start` runs here (--address auto)
            num_cpus=settings.ray_num_cpus or None,
            object_store_memory=settings.ray_object_store_mb * 1024 * 1024 or None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_count(ray: ModuleType, engine: RayEngine) -> int:
    """Actors to start: ``engine.workers``, else one per CPU of the cluster."""
    if engine.workers is not None:
        return engine.workers
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
