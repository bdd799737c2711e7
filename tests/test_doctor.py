"""`recsys doctor` on a healthy install, and on broken ones: each failure names its fix."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.settings import get_settings


def _invoke(*args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def _by_check(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {finding["check"]: finding for finding in report["checks"]}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


@pytest.fixture
def installed(settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install as the README sets it up: schema, a synthetic log, a production iALS version."""
    monkeypatch.setenv("RECSYS_API_KEY", "test-key")
    get_settings.cache_clear()
    runner = CliRunner()
    events = tmp_path / "events.csv"
    sizes = ["--users", "150", "--items", "60", "--interactions", "3000"]
    for command in (
        ["generate-synthetic", *sizes, "--out", str(events)],
        ["db", "upgrade"],
        ["ingest", "csv", str(events)],
        ["ingest", "items", str(tmp_path / "items.csv")],
        ["train", "--model", "ials", "--param", "iterations=3", "--promote", "--force"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    return settings_env


def test_healthy_install_exits_zero(installed: Path) -> None:
    code, report = _invoke()
    checks = _by_check(report)
    assert code == 0 and report["healthy"], report
    assert set(checks) == {
        "settings",
        "database",
        "production version",
        "index recall",
        "TensorFlow",
        "FAISS",
        "disk space",
        "service",
    }
    assert {checks[name]["status"] for name in checks} <= {"ok", "skip"}
    assert "checksums hold" in checks["production version"]["detail"]
    assert "recall@10 1.000" in checks["index recall"]["detail"]
    assert "no GPU" in checks["TensorFlow"]["detail"] or "GPU(s)" in checks["TensorFlow"]["detail"]


def test_corrupt_production_artifact_fails_and_names_the_fix(installed: Path) -> None:
    (version_dir,) = (installed / "artifacts").glob("ials-*")
    largest = max((p for p in version_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))

    code, report = _invoke("--skip-tensorflow")
    checks = _by_check(report)
    assert code == 1 and not report["healthy"]
    assert checks["production version"]["status"] == "fail"
    assert version_dir.name in checks["production version"]["detail"]
    assert "recsys models rollback" in checks["production version"]["fix"]
    assert checks["index recall"]["status"] == "skip"
    assert checks["database"]["status"] == "ok"

    text = CliRunner().invoke(app, ["doctor", "--skip-tensorflow"])
    assert text.exit_code == 1
    assert "fix: run `recsys models rollback`" in text.output
    assert "1 problem(s): production version" in text.output


def test_database_down_fails_and_names_the_fix(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_closed_port()}/recsys")
    get_settings.cache_clear()
    code, report = _invoke("--skip-tensorflow")
    checks = _by_check(report)
    assert code == 1
    assert checks["database"]["status"] == "fail"
    assert "cannot connect" in checks["database"]["detail"]
    assert "start the database server" in checks["database"]["fix"]
    assert checks["production version"]["status"] == "skip"  # the rest still ran
    assert checks["FAISS"]["status"] == "ok"


def test_missing_schema_and_unreachable_service(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RECSYS_SERVICE_URLS", json.dumps([url]))
    get_settings.cache_clear()
    code, report = _invoke("--skip-tensorflow")
    checks = _by_check(report)
    assert code == 1
    assert checks["database"]["fix"] == "run `recsys db upgrade`"
    assert checks["service"]["status"] == "fail"
    assert url in checks["service"]["detail"] and "recsys serve" in checks["service"]["fix"]
