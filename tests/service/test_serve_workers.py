"""`recsys serve --workers 2`: workers forked from the command's process, each loading the model,
answering, seeing each other's feedback and summing their metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from recsys.registry.registry import VersionInfo
from recsys.settings import Settings
from tests.conftest import REPO_ROOT
from tests.service.conftest import API_KEY

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from service_process import free_port, wait_ready


def test_two_forked_workers_serve_share_feedback_and_sum_their_metrics(
    settings: Settings, version: VersionInfo, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        "RECSYS_DATABASE_URL": settings.database_url,
        "RECSYS_API_KEY": API_KEY,
        "RECSYS_RELOAD_POLL_SECONDS": "0",
        "RECSYS_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "recsys", "serve", "--workers", "2", "--port", str(port)]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            f"{base}/ready",
            timeout=120,
            process=process,
            log=log,
            condition=lambda: len(re.findall("ready in ", log.read_text(errors="replace"))) >= 2,
        )
        pids = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        assert len(pids) == 2
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(20):  # both workers answer (the kernel spreads the connections)
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    body = fresh.get("/users/u1/recommendations").json()
                    assert body["model_version"] == version.version
            before = client.get("/users/u2/recommendations", params={"k": 20}).json()["items"]
            target = before[0]["item_id"]
            stored = client.post(
                "/interactions",
                json={"user_id": "u2", "item_id": target, "value": 1.0},
                headers={"X-API-Key": API_KEY},
            )
            assert stored.status_code == 201, stored.text
            deadline = time.monotonic() + 10
            for _ in range(10):  # whichever worker answers has the event: it is excluded
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    after = fresh.get("/users/u2/recommendations", params={"k": 20}).json()["items"]
                assert target not in [item["item_id"] for item in after]
                assert time.monotonic() < deadline
            metrics = client.get("/metrics").text
        loaded = re.findall(r'recsys_model_loaded\{[^}]*pid="(\d+)"[^}]*\} 1\.0', metrics)
        assert set(loaded) == pids  # one series per worker: the metrics are summed across both
        answered = re.findall(
            r'recsys_http_requests_total\{endpoint="/users/\{user_id\}/recommendations"'
            r',method="GET",status="200"\} (\d+\.\d+)',
            metrics,
        )
        assert [float(count) for count in answered] == [31.0]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]
