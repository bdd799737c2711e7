"""Each service worker computes with one BLAS thread, in every BLAS library the answers use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_info
from service.app import create_app

with TestClient(create_app()):
    import scipy.linalg  # what the fold-in solves with, whoever imports it first
    print(json.dumps([(info["filepath"], info["num_threads"]) for info in threadpool_info()]))
"""


def test_every_blas_library_runs_one_thread_in_a_worker(tmp_path: Path) -> None:
    """SciPy ships its own OpenBLAS; loaded after the worker's limit, it kept a thread per core,
    and under load the fold-in's small solve waited for them (POST /recommendations 100x slower).
    Run in a fresh interpreter: in the test process SciPy is loaded long before."""
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(tmp_path),
        "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'recsys.db'}",
        "RECSYS_LOG_LEVEL": "warning",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    libraries = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("scipy_openblas" in path for path, _ in libraries), libraries
    assert len(libraries) >= 2  # numpy's and SciPy's
    assert all(threads == 1 for _, threads in libraries), libraries
