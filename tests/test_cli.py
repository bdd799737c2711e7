"""The `recsys` command's conventions: version, flags, fast start-up, quiet output, log format."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import recsys
from recsys.cli import app
from recsys.log import configure_logging, request_id

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = (
    "tensorflow", "faiss", "sqlalchemy", "pandas", "scipy", "pydantic", "fastapi", "matplotlib", "ray",
)  # fmt: skip


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"recsys {recsys.__version__}"


def test_json_flags_follow_the_typer_convention(settings_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    help_text = runner.invoke(app, ["stats", "--help"]).output
    assert "--json / --no-json" in help_text
    assert "<bool>" not in help_text
    as_json = runner.invoke(app, ["stats", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["interactions"] == 0
    as_text = runner.invoke(app, ["stats", "--no-json"])
    assert as_text.exit_code == 0 and as_text.output.startswith("users")


def test_help_imports_nothing_heavy() -> None:
    """`recsys --help` must not load the libraries that make start-up slow (measured, per module,
    with the interpreter's own import timer)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recsys", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Usage:" in run.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    loaded_heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY_MODULES)
    assert loaded_heavy == []
    assert {"recsys.cli", "recsys.cli.common"} <= imported  # the timer did see the command load


def test_generate_synthetic_draws_no_bar_outside_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    args = ["--users", "50", "--items", "20", "--interactions", "400", "--out", str(out)]
    result = CliRunner().invoke(app, ["generate-synthetic", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote 400 interactions to {out}")
    assert lines[1] == f"wrote 20 items (id, title, genres) to {tmp_path / 'items.csv'}"
    assert not any(mark in result.output for mark in ("━", "\r", "\x1b["))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("WARNING", "text")


def test_text_log_lines_carry_timestamps(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("recsys.test").info("trained %d models", 3)
    logging.getLogger("some.library").info("not shown: other libraries log warnings only")
    (line,) = capsys.readouterr().err.splitlines()
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and stamp[4] == "-" and stamp[10] == "T"
    assert (level, rest) == ("INFO", "recsys.test: trained 3 models")


def test_json_log_lines_carry_the_request_id(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("service.test")
    log.info("outside a request")
    token = request_id.set("req-123")
    try:
        log.warning("inside %s", "a request")
    finally:
        request_id.reset(token)
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "outside a request" and "request_id" not in first
    assert second["message"] == "inside a request"
    assert second["request_id"] == "req-123"
    assert (second["level"], second["logger"]) == ("WARNING", "service.test")


def test_invalid_settings_name_the_variable(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_LOG_FORMAT", "xml")
    result = subprocess.run(
        [sys.executable, "-m", "recsys", "stats"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "RECSYS_LOG_FORMAT" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def trained_twice(settings_env: Path, tmp_path: Path) -> list[str]:
    """A database with a synthetic log and two popularity versions; returns their ids."""
    runner = CliRunner()
    events = tmp_path / "events.csv"
    sizes = ["--users", "120", "--items", "40", "--interactions", "2000"]
    for command in (
        ["generate-synthetic", *sizes, "--out", str(events)],
        ["db", "upgrade"],
        ["ingest", "csv", str(events)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    versions = []
    for _ in range(2):
        trained = runner.invoke(app, ["train", "--model", "popularity", "--json"])
        assert trained.exit_code == 0, trained.output
        versions.append(json.loads(trained.stdout)["version"])
    return versions


def test_models_list_fits_80_columns_and_wide_shows_all(trained_twice: list[str]) -> None:
    runner = CliRunner()
    narrow = runner.invoke(app, ["models", "list"], terminal_width=80)
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.output
    for version in trained_twice:  # whole ids, one per row, with their metric
        (row,) = [line for line in lines if line.startswith(version + " ")]
        assert row.split()[1] in ("candidate", "production")
        assert float(row.split()[2]) > 0
    wide = runner.invoke(app, ["models", "list", "--wide"], terminal_width=80)
    header = wide.output.splitlines()[0].split()
    assert {"model", "promoted", "watermark", "fit_seconds", "recall@10"} <= set(header)
    assert max(len(line) for line in wide.output.splitlines()) > 80


def test_tensorflow_starts_without_noise_and_real_errors_still_show() -> None:
    script = (
        "import os\n"
        "from recsys.runtime import device\n"
        "device.import_tensorflow()\n"
        "with device._startup_stderr_filtered():\n"
        "    os.write(2, b'E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR\\n')\n"
        "    os.write(2, b'I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "    os.write(2, b'a real problem\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "a real problem\n"


def _version(name: str, status: str, ndcg: float, split: dict[str, Any] | None, **metrics: float) -> Any:
    from datetime import UTC, datetime

    from recsys.registry.versions import VersionInfo

    recorded: dict[str, Any] = {"ndcg@10": ndcg, "baseline_ndcg@10": 0.3, **metrics}
    if split is not None:
        recorded["split"] = split
    return VersionInfo(
        version=name,
        model=name.split("-")[0],
        status=status,
        path=Path("/nowhere"),
        params={},
        metrics=recorded,
        watermark=1,
        data_fingerprint="f",
        created_at=datetime.now(UTC),
        promoted_at=None,
    )


def test_models_list_marks_metrics_that_are_not_comparable() -> None:
    """The warm-started version validated on pairs it had seen is marked, as is one measured on
    another split; the pipeline's backtest figure has its own column."""
    from rich.console import Console

    from recsys.cli.models import notes_legend, versions_table

    held_out = {"kind": "held-out", "data": "abc", "seed": 43}
    versions = [
        _version(
            "ials-20260101000003-aaaaaa",
            "candidate",
            0.48,
            {"kind": "in-sample", "data": "abd", "seed": None},
            **{"backtest_ndcg@10": 0.36},
        ),
        _version("ials-20260101000002-bbbbbb", "production", 0.37, held_out, **{"backtest_ndcg@10": 0.35}),
        _version("mf-20260101000001-cccccc", "candidate", 0.10, {**held_out, "data": "other"}),
        _version("ials-20260101000000-dddddd", "archived", 0.30, None),
    ]
    console = Console(width=80, record=True)
    console.print(versions_table(versions))
    rows = {
        line.split()[0]: line.split() for line in console.export_text().splitlines() if line[:1].isalpha()
    }
    assert rows["ials-20260101000003-aaaaaa"][2:5] == ["0.4800*", "0.3000", "0.3600"]
    assert rows["ials-20260101000002-bbbbbb"][2:5] == ["0.3700", "0.3000", "0.3500"]
    assert rows["mf-20260101000001-cccccc"][2] == "0.1000~"
    assert rows["ials-20260101000000-dddddd"][2] == "0.3000?"
    legend = notes_legend(versions)
    assert [line[0] for line in legend] == ["*", "~", "?"]
    assert "in-sample" in legend[0]
