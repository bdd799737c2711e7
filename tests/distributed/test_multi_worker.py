"""MF and the two-tower model trained by two TensorFlow worker processes on localhost
(``TF_CONFIG``, ``MultiWorkerMirroredStrategy``) against the same training in one process.

MF: each global batch is split between the workers and their gradients summed, which is the local
step up to float rounding, so losses agree to 1e-5 and metrics to 1e-3 (losses measured 1e-7 apart).
Two-tower: each worker ranks its half of the batch against its own in-batch negatives, so the
comparison is with a local run whose batch is one worker's share; the updates still differ (two
half-batches summed per step), so losses agree to 3% and recall to 0.05 (measured by hand over
12 epochs: 1% and 0.005).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import ConfigError
from recsys.runtime.device import WorkerRole, worker_role
from recsys.settings import get_settings
from tests.conftest import REPO_ROOT
from tests.models.contract import planted_data

MF_PARAMS = ["factors=16", "epochs=4", "batch_size=512", "optimizer=adam", "learning_rate=0.03"]
MF_LOSS_RTOL, MF_METRIC_ATOL = 1e-5, 1e-3
TOWER_LOSS_RTOL, TOWER_RECALL_ATOL = 0.03, 0.05


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [int(probe.getsockname()[1]) for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def run_workers(
    command: list[str],
    env: dict[str, str],
    n: int = 2,
    timeout: float = 600,
    alongside: list[str] | None = None,
) -> list[str]:
    """Run ``command`` as ``n`` TF_CONFIG workers at once (and ``alongside``, without TF_CONFIG,
    at the same time: the workers wait on each other, so a local run overlaps them well); the
    standard outputs, the workers' first."""
    ports = free_ports(n)
    launches = [(command, {**env, "TF_CONFIG": tf_config(ports, index)}) for index in range(n)]
    if alongside is not None:
        launches.append((alongside, env))
    processes = [
        subprocess.Popen(
            launch, env=launch_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for launch, launch_env in launches
    ]
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def base_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    env.pop("TF_CONFIG", None)
    return env


def test_tf_config_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_role() is None
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2, 3], 2))
    assert worker_role() == WorkerRole("worker", 2, 3)
    assert worker_role() is not None and not worker_role().is_chief  # type: ignore[union-attr]
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    assert worker_role().is_chief  # type: ignore[union-attr]
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(with_chief))
    assert not worker_role().is_chief  # type: ignore[union-attr]  # the chief task is the chief
    monkeypatch.setenv("TF_CONFIG", tf_config([1], 0))
    assert worker_role() is None  # one worker: a single machine
    for bad in ("not json", json.dumps({"task": {"type": "worker", "index": 0}}), tf_config([1, 2], 5)):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="TF_CONFIG"):
            worker_role()


@pytest.fixture
def planted_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings_env: Path) -> dict[str, str]:
    """The planted ratings ingested into a SQLite database; the environment that points at it.

    Through ``settings_env``, which resets the cached settings: the in-process commands below
    would otherwise write to the database of an earlier test of the same worker."""
    train = planted_data().train.tocoo()
    events = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in train.row],
            "item_id": [f"i{i}" for i in train.col],
            "rating": train.data,
            "timestamp": 1_700_000_000 + np.arange(train.nnz),
        }
    ).to_csv(events, index=False)
    env = {"RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RECSYS_ARTIFACT_DIR", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    for command in (
        ["db", "upgrade"],
        [
            "ingest",
            "csv",
            str(events),
            "--value-col",
            "rating",
            "--timestamp-col",
            "timestamp",
            "--kind",
            "rating",
        ],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    return env


def test_recsys_train_mf_on_two_tf_config_workers_equals_one_process(
    planted_database: dict[str, str],
) -> None:
    command = [sys.executable, "-m", "recsys", "train", "--model", "mf", "--json", "--until", "2000000000"]
    for param in MF_PARAMS:
        command += ["--param", param]
    chief_out, worker_out = run_workers(command, base_env(**planted_database))
    chief = json.loads(chief_out)
    assert json.loads(worker_out) == {"worker": "worker", "index": 1, "registered": None}
    local_run = subprocess.run(
        command, env=base_env(**planted_database), cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert local_run.returncode == 0, local_run.stderr[-3000:]
    local = json.loads(local_run.stdout)
    # Only the chief registered: the local run's version is the second one.
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    assert {entry["version"] for entry in json.loads(listed.stdout)} >= {chief["version"], local["version"]}
    assert len(json.loads(listed.stdout)) == 2
    assert chief["metrics"]["best_epoch"] == local["metrics"]["best_epoch"]
    for key in ("rmse", "ndcg@10", "recall@10"):
        assert chief["metrics"][key] == pytest.approx(local["metrics"][key], abs=MF_METRIC_ATOL), key
    assert chief["metrics"]["rmse"] < chief["metrics"]["baseline_rmse"]  # a model that learned


TOWER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tests.models.contract import planted_data
    from tests.models.test_two_tower import FAST
    from recsys.evaluation import evaluate_ranking
    from recsys.models import create_model
    from recsys.runtime.device import distribution_strategy

    data = planted_data()
    model = create_model("two-tower", **{**FAST, "epochs": 4, "batch_size": int(sys.argv[1])}).fit(data.train)
    print(json.dumps({
        "replicas": distribution_strategy().num_replicas_in_sync,
        "losses": [entry["loss"] for entry in model.history],
        "recall": evaluate_ranking(model, data.train, data.test)["recall"],
    }))
    """
)


def test_two_tower_on_two_tf_config_workers_learns_what_one_process_learns() -> None:
    *outputs, local_out = run_workers(
        [sys.executable, "-c", TOWER_SCRIPT, "32"],
        base_env(),
        alongside=[sys.executable, "-c", TOWER_SCRIPT, "16"],  # one worker's share of the batch
    )
    reports: list[dict[str, Any]] = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert [report["replicas"] for report in reports] == [2, 2]
    assert reports[0] == reports[1]  # the workers hold one model
    local = json.loads(local_out.strip().splitlines()[-1])
    assert local["replicas"] == 1
    np.testing.assert_allclose(reports[0]["losses"], local["losses"], rtol=TOWER_LOSS_RTOL)
    assert reports[0]["losses"][-1] < 0.95 * reports[0]["losses"][0]
    assert reports[0]["recall"] == pytest.approx(local["recall"], abs=TOWER_RECALL_ATOL)
