"""`/ready` checks what it claims: the production version is the one loaded."""

from __future__ import annotations

import socket
import time

from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from recsys.registry.registry import ModelRegistry, VersionInfo
from recsys.settings import Settings
from tests.service.conftest import API_KEY, register_popularity

KEY = {"X-API-Key": API_KEY}


def test_ready_reports_a_production_version_that_fails_to_load(
    client: TestClient, registry: ModelRegistry, settings: Settings, version: VersionInfo
) -> None:
    assert client.get("/ready").status_code == 200
    damaged = register_popularity(registry, settings)  # promoted, then its disk goes bad
    target = damaged.path / "model" / "arrays.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))

    assert client.post("/admin/reload", headers=KEY).status_code == 503
    ready = client.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and body["model_version"] == version.version
    assert f"production version {damaged.version} fails to load" in body["detail"]
    assert "arrays.npz does not match its checksum" in body["detail"]
    assert body["detail"].endswith(f"still serving {version.version}")
    # Meanwhile answers keep coming from the version that loaded.
    assert client.get("/users/u1/recommendations").json()["model_version"] == version.version

    registry.rollback()
    assert client.post("/admin/reload", headers=KEY).status_code == 200
    assert client.get("/ready").json() == {
        "ready": True,
        "model_version": version.version,
        "database": True,
        "detail": None,
    }


def test_ready_answers_quickly_when_the_database_is_frozen(
    client: TestClient, settings: Settings, version: VersionInfo
) -> None:
    # A frozen server accepts the connection and never answers: no server-side timeout can fire.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        frozen = create_engine(
            f"postgresql+psycopg://nobody@127.0.0.1:{port}/recsys", connect_args={"connect_timeout": 60}
        )
        app = client.app
        original = app.state.engine  # type: ignore[attr-defined]
        app.state.engine = frozen  # type: ignore[attr-defined]
        try:
            started = time.monotonic()
            ready = client.get("/ready")
            waited = time.monotonic() - started
        finally:
            app.state.engine = original  # type: ignore[attr-defined]
    timeout = settings.request_timeout_seconds
    assert ready.status_code == 503 and waited < timeout + 3, waited
    assert ready.json()["database"] is False
    assert ready.json()["detail"] == f"database unavailable: no answer within {timeout:g} s"
