"""What can be checked of the Docker set-up without a Docker engine: files, commands, lint."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.main import get_command

from recsys.cli import app

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def _cli_paths() -> set[tuple[str, ...]]:
    """Every command path the `recsys` CLI offers, such as ('pipeline', 'run')."""
    paths: set[tuple[str, ...]] = set()

    def walk(command: typer.core.TyperGroup | object, prefix: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            paths.add(prefix)
            return
        for name, sub in subcommands.items():
            walk(sub, (*prefix, name))

    walk(get_command(app), ())
    return paths


def _recsys_invocations(command: list[str] | str) -> list[list[str]]:
    """The `recsys ...` calls in a CMD/command (list form or a shell string with &&)."""
    text = command if isinstance(command, str) else " ".join(command)
    return [part.split() for part in re.findall(r"recsys [a-z\- ]+", text)]


def _assert_known(call: list[str], paths: set[tuple[str, ...]]) -> None:
    words = tuple(w for w in call[1:] if not w.startswith("-"))
    assert any(words[: len(p)] == p for p in paths), f"`{' '.join(call)}` is not a recsys command"


def test_compose_file_parses_and_references_existing_files() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "load", "train", "api"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: missing {build['dockerfile']}"
        assert "healthcheck" in service or name in {"load", "train"}, f"{name} has no health check"
    assert "artifacts" in compose["volumes"]


def test_container_commands_are_recsys_commands() -> None:
    paths = _cli_paths()
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    calls = [
        call
        for service in compose["services"].values()
        if "command" in service
        for call in _recsys_invocations(service["command"])
    ]
    for dockerfile in DOCKERFILES:
        for match in re.findall(r"^CMD (\[.*\])", dockerfile.read_text(), flags=re.MULTILINE):
            calls += _recsys_invocations(yaml.safe_load(match))
    assert len(calls) >= 4
    for call in calls:
        _assert_known(call, paths)


def test_console_script_is_the_cli_main() -> None:
    (script,) = entry_points(group="console_scripts", name="recsys")
    assert script.value == "recsys.cli:main"


def test_images_run_as_non_root_with_health_check() -> None:
    api = (DOCKER / "Dockerfile.api").read_text()
    assert "HEALTHCHECK" in api and "/ready" in api
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        final_stage = text.rsplit("FROM ", 1)[1]
        assert re.search(r"^USER (?!root)", final_stage, flags=re.MULTILINE), dockerfile.name
        assert "build-essential" not in final_stage and "gcc" not in final_stage


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (dev extra)")
def test_dockerfiles_pass_hadolint() -> None:
    result = subprocess.run(["hadolint", *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _lock_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "lock_constraints", REPO_ROOT / "scripts" / "lock_constraints.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compose_requires_the_api_key_and_binds_to_localhost() -> None:
    text = (DOCKER / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    for name in ("load", "train", "api"):
        key = compose["services"][name]["environment"]["RECSYS_API_KEY"]
        # ${VAR:?message}: compose stops with the message when the variable is unset or empty.
        assert re.fullmatch(r"\$\{RECSYS_API_KEY:\?[^}]+\}", key), key
    assert "change-me" not in text
    (port,) = compose["services"]["api"]["ports"]
    assert port == "${RECSYS_BIND_ADDRESS:-127.0.0.1}:${RECSYS_API_PORT:-8000}:8000"


def test_constraints_pin_everything_the_images_install() -> None:
    lock = _lock_script()
    pins = lock.read_pins()
    packages = lock.image_packages()
    for image, needed in packages.items():
        missing = sorted(set(needed) - set(pins))
        assert not missing, f"{image} image installs unpinned {missing}: run scripts/lock_constraints.py"
        assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pins[name]) for name in needed)
    assert {"fastapi", "faiss-cpu", "sqlalchemy", "psycopg"} <= set(packages["api"])
    assert {"tensorflow", "tensorflow-recommenders"} <= set(packages["train"])
    # The API image serves numpy vectors: no TensorFlow, no plotting.
    assert not {"tensorflow", "matplotlib"} & set(packages["api"])
    assert "matplotlib" not in packages["train"]
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "COPY docker/constraints.txt" in text
        assert re.search(r"pip install [^\n]*--constraint constraints\.txt", text), dockerfile.name
