"""The README's five-minute tour, run as written: its commands in order, in an empty folder, with
the server in the background (on a free port instead of 8000) and no TensorFlow noise on stderr."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What TensorFlow's C++ runtime prints when it is not silenced (CUDA probes, absl, oneDNN).
NOISE = re.compile(r"cuInit|cudart|cuda_|absl::InitializeLog|oneDNN|TF-TRT|^[IWE]\d{4} ", re.MULTILINE)


def tour_commands(readme: str) -> list[str]:
    """The commands of the first ``bash`` block under "A five-minute tour", one per entry, with
    backslash continuations joined (comments are left to bash)."""
    section = readme.split("## A five-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the tour has no bash block"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tour_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env["RECSYS_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["RECSYS_RELOAD_POLL_SECONDS"] = "1"
    return env


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for server in started:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def _wait_ready(url: str, server: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited: {server.stdout.read() if server.stdout else ''}"
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} was not ready within {seconds} s")


def test_readme_tour_runs_as_written(
    tmp_path: Path, tour_env: dict[str, str], servers: list[subprocess.Popen[str]]
) -> None:
    commands = tour_commands((REPO_ROOT / "README.md").read_text())
    assert commands[0].startswith("recsys generate-synthetic") and any("recsys serve" in c for c in commands)
    port = _free_port()
    outputs: dict[str, str] = {}
    for command in commands:
        command = command.replace("8000", str(port))
        if "recsys serve" in command:
            server = subprocess.Popen(
                ["bash", "-c", command],
                cwd=tmp_path,
                # Structured logs, to check that the service's lines carry the request id.
                env={**tour_env, "RECSYS_LOG_FORMAT": "json"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            servers.append(server)
            _wait_ready(f"http://127.0.0.1:{port}", server)
            continue
        run = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=tour_env, capture_output=True, text=True, timeout=900
        )
        assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
        assert not NOISE.search(run.stderr), f"{command} printed TensorFlow noise:\n{run.stderr}"
        outputs[command.split(" #")[0].strip()] = run.stdout

    def output_of(prefix: str) -> str:
        (text,) = [out for command, out in outputs.items() if command.startswith(prefix)]
        return text

    version = output_of("recsys train").strip()
    assert re.fullmatch(r"ials-\d{14}-[0-9a-f]+", version)
    assert version in output_of("recsys models list")
    assert "interactions  50,000" in output_of("recsys stats")
    recommended = json.loads(output_of("curl 'http"))
    assert recommended["user_id"] == "u42" and len(recommended["items"]) == 5
    assert all(item["title"].startswith("Synthetic item") for item in recommended["items"])  # items.csv
    assert json.loads(output_of("curl -X POST"))["stored"] == 1
    scored = pd.read_parquet(tmp_path / "recommendations.parquet")
    assert scored["user_id"].nunique() > 990 and scored.groupby("user_id").size().max() == 20
    assert output_of("recsys pipeline run").strip()
    assert "healthy" in output_of("recsys doctor")

    (server,) = servers
    os.killpg(server.pid, signal.SIGTERM)
    log, _ = server.communicate(timeout=60)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(record) for record in records)
    (access,) = [r for r in records if "GET /users/u42/recommendations" in r["message"]]
    assert re.fullmatch(r"[0-9a-f]{32}", access["request_id"])
    assert not NOISE.search(log)
