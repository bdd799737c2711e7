"""Swapping model versions while serving; the background poll; no TensorFlow in the service."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

from fastapi.testclient import TestClient

from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.settings import Settings
from service.app import create_app
from tests.conftest import REPO_ROOT
from tests.service.conftest import API_KEY, register_popularity

KEY = {"X-API-Key": API_KEY}


def test_admin_reload_swaps_to_the_promoted_version(
    client: TestClient, registry: ModelRegistry, settings: Settings, version: VersionInfo
) -> None:
    newer = register_popularity(registry, settings)
    assert client.get("/users/u1/recommendations").json()["model_version"] == version.version
    response = client.post("/admin/reload", headers=KEY)
    assert response.status_code == 200
    body = response.json()
    assert (
        body["reloaded"] is True and body["version"] == newer.version and body["previous"] == version.version
    )
    assert client.get("/users/u1/recommendations").json()["model_version"] == newer.version
    assert client.get("/ready").json()["model_version"] == newer.version


def test_hot_swap_under_concurrent_requests(
    client: TestClient, registry: ModelRegistry, settings: Settings, version: VersionInfo
) -> None:
    other = register_popularity(registry, settings, promote=False)
    statuses: Counter[int] = Counter()
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for path in ("/users/u3/recommendations", "/users/stranger/recommendations", "/items/i1/similar"):
                response = client.get(path)
                statuses[response.status_code] += 1
                versions.add(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(6):
            target = other if round_number % 2 == 0 else version
            registry.promote(target.version, force=True)
            assert client.post("/admin/reload", headers=KEY).json()["version"] == target.version
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200} and sum(statuses.values()) > 20
    assert versions == {version.version, other.version}


def test_background_poll_notices_a_new_production_version(
    settings: Settings, registry: ModelRegistry, version: VersionInfo
) -> None:
    with TestClient(create_app(settings.model_copy(update={"reload_poll_seconds": 0.1}))) as client:
        newer = register_popularity(registry, settings)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if client.get("/users/u1/recommendations").json()["model_version"] == newer.version:
                break
            time.sleep(0.05)
        assert client.get("/ready").json()["model_version"] == newer.version


def test_no_model_yet_means_not_ready(settings: Settings, registry: ModelRegistry) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["detail"] == "no model version loaded"
        response = client.get("/users/u1/recommendations")
        assert response.status_code == 503 and "no model version is loaded" in response.json()["detail"]


def test_service_does_not_import_tensorflow(settings: Settings, version: VersionInfo) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from recsys.settings import Settings
from service.app import create_app
settings = Settings(
    data_dir={str(settings.data_dir)!r}, database_url={settings.database_url!r}, reload_poll_seconds=0
)
with TestClient(create_app(settings)) as client:
    body = client.get("/users/u1/recommendations").json()
    assert body["model_version"] == {version.version!r}, body
    assert client.post("/recommendations", json={{"items": ["i1"]}}).status_code == 200
print("tensorflow" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
