"""Swapping model versions while serving; the background poll; no TensorFlow in the service."""

from __future__ import annotations

import json
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


#: What a worker must not import to serve reads: TensorFlow (training only), Alembic (schema
#: migrations), pandas and pyarrow (ingestion; a worker imports them before its first write) and
#: rich (the command line's output).
NOT_IMPORTED_BY_SERVING = ("tensorflow", "alembic", "pandas", "pyarrow", "rich")


def test_service_imports_neither_tensorflow_nor_migration_or_ingestion_libraries(
    settings: Settings, version: VersionInfo
) -> None:
    # A real server on a socket of its own, asked with urllib: the test client would import httpx,
    # which imports rich itself.
    script = f"""
import json, socket, sys, threading, time, urllib.request
import uvicorn
from recsys.settings import Settings
from service.app import create_app
settings = Settings(
    data_dir={str(settings.data_dir)!r}, database_url={settings.database_url!r}, reload_poll_seconds=0,
    api_key={API_KEY!r},
)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
base = "http://127.0.0.1:%d" % sock.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
thread = threading.Thread(target=server.run, kwargs={{"sockets": [sock]}})
thread.start()
deadline = time.monotonic() + 60
while not server.started and time.monotonic() < deadline:
    time.sleep(0.05)

def ask(path, body=None, headers={{}}):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={{"Content-Type": "application/json", **headers}}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())

try:
    assert ask("/ready")[0] == 200
    status, body = ask("/users/u1/recommendations")
    assert body["model_version"] == {version.version!r}, body
    assert ask("/recommendations", {{"items": ["i1"]}})[0] == 200
    assert ask("/items/i1/similar")[0] == 200
    heavy = {NOT_IMPORTED_BY_SERVING!r}
    serving = [name for name in heavy if name in sys.modules]
    status, _ = ask("/interactions", {{"user_id": "u1", "item_id": "i2", "value": 1.0}}, {KEY!r})
    assert status == 201
    after_a_write = [name for name in heavy if name in sys.modules]
finally:
    server.should_exit = True
    thread.join()
print(json.dumps({{"serving": serving, "after_a_write": after_a_write}}))
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
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert imported["serving"] == [], result.stderr[-8000:]
    # The write path validates with pandas and pyarrow: loaded by the first write, not at start
    # (which also shows that the check above can see them).
    assert {"pandas", "pyarrow"} <= set(imported["after_a_write"])
    assert "tensorflow" not in imported["after_a_write"]
