"""A real Ray cluster on this machine for the distributed tests: a head node and one worker node,
each its own raylet and processes (``ray.cluster_utils.Cluster``), one CPU and a 100 MB object
store each, no dashboard.

Without Ray the tests are skipped; ``.ci/run`` sets ``RECSYS_REQUIRE_RAY=1`` (the dev extra
installs Ray) so that a missing Ray fails the run instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

REQUIRE_RAY = os.environ.get("RECSYS_REQUIRE_RAY") == "1"
OBJECT_STORE_BYTES = 100 * 1024 * 1024
NODE_ARGS = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False}


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        if REQUIRE_RAY:
            pytest.fail("RECSYS_REQUIRE_RAY=1 but Ray is not installed (pip install -e '.[dev]')")
        pytest.skip("Ray is not installed (pip install -e '.[distributed]'); .ci/run requires it")
    return ray


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of a two-node Ray cluster (head + one worker node), shut down after the session.

    Its processes inherit this process's environment, so they import the recsys under test.
    """
    require_ray()
    from ray.cluster_utils import Cluster

    os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS))
    try:
        cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        yield str(cluster.address)
    finally:
        cluster.shutdown()


@pytest.fixture
def local_ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits for a Ray that a command starts on this machine (no --address)."""
    require_ray()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RECSYS_RAY_NUM_CPUS", "2")
    monkeypatch.setenv("RECSYS_RAY_OBJECT_STORE_MB", "100")
