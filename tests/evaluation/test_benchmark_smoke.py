"""CI smoke run of the benchmark (synthetic data, --quick) and `recsys evaluate` on a version.

The full benchmark is a command (docs/benchmarks.md), not a test: this checks that the same entry
point runs end to end and writes a well-formed report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import ConfigError
from recsys.evaluation.peers import missing_requirement

runner = CliRunner()
RANKING_KEYS = {"precision", "recall", "ndcg", "map", "hr", "coverage"}


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


@pytest.mark.slow
def test_quick_benchmark_writes_a_complete_report(tmp_path: Path) -> None:
    models = ["popularity", "ials", "mf", "ease", "implicit-als", "surprise-svd"]
    expected_k = {"popularity", "ials", "mf", "ease"} | (
        {"implicit-als"} if missing_requirement("implicit-als") is None else set()
    )
    expected_r = {"mf"} | ({"surprise-svd"} if missing_requirement("surprise-svd") is None else set())
    out = tmp_path / "report"

    code, stdout = run(
        "benchmark", "--dataset", "synthetic", "--quick", "--protocol", "both",
        "--models", ",".join(models), "--out", str(out),
    )  # fmt: skip

    assert code == 0, stdout
    for name in (
        "report.md",
        "results.json",
        "metrics.png",
        "training_curves.png",
        "quality_vs_fit_time.png",
    ):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    assert {
        "dataset",
        "seed",
        "k",
        "machine",
        "versions",
        "protocols",
        "data",
        "date",
        "command",
    } <= result.keys()
    assert {"cpu", "cores", "memory_gb", "gpu"} <= result["machine"].keys()
    assert result["machine"]["cores"] >= 1

    rows_k = {row["model"]: row for row in result["protocols"]["K"]["rows"]}
    assert set(rows_k) == expected_k
    for row in rows_k.values():
        assert row["metrics"].keys() >= RANKING_KEYS
        assert all(0.0 <= row["metrics"][key] <= 1.0 for key in RANKING_KEYS), row
        assert row["fit_seconds"] >= 0 and row["topk_seconds"] > 0 and row["peak_rss_mb"] > 0
    # planted structure: the learned models rank better than the popularity baseline
    assert rows_k["ials"]["metrics"]["ndcg"] > rows_k["popularity"]["metrics"]["ndcg"]
    assert rows_k["ease"]["metrics"]["ndcg"] > rows_k["popularity"]["metrics"]["ndcg"]
    assert rows_k["ials"]["history"], "iALS logs its validation curve"

    rows_r = {row["model"]: row for row in result["protocols"]["R"]["rows"]}
    assert set(rows_r) == expected_r
    for row in rows_r.values():
        assert 0.0 < row["metrics"]["mae"] <= row["metrics"]["rmse"] < 4.0  # ratings are 1..5
    assert any("popularity" in reason for reason in result["protocols"]["R"]["skipped"])

    report = (out / "report.md").read_text()
    for name in expected_k | expected_r:
        assert f"| {name} |" in report
    assert "| popularity |" in stdout


def test_check_exits_non_zero_below_a_threshold(tmp_path: Path) -> None:
    def thresholds(bound: float) -> str:
        path = tmp_path / f"thresholds-{bound}.json"
        rule = {"dataset": "synthetic", "protocol": "K", "model": "popularity", "metric": "ndcg"}
        path.write_text(json.dumps([{**rule, "op": ">=", "bound": bound}]))
        return str(path)

    common = ["benchmark", "--dataset", "synthetic", "--quick", "--protocol", "K", "--models", "popularity"]
    code, stdout = run(*common, "--out", str(tmp_path / "a"), "--check", "--thresholds", thresholds(1.01))
    assert code == 1
    assert "CHECK FAILED: popularity ndcg" in stdout

    code, stdout = run(*common, "--out", str(tmp_path / "b"), "--check", "--thresholds", thresholds(0.0))
    assert code == 0, stdout
    checks = json.loads((tmp_path / "b" / "results.json").read_text())["checks"]
    assert [(c["model"], c["passed"]) for c in checks] == [("popularity", True)]


def test_unknown_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lightfm"):
        run("benchmark", "--dataset", "synthetic", "--models", "lightfm", "--out", str(tmp_path))


def test_evaluate_a_registered_version(
    sqlite_engine: Engine, sqlite_url: str, settings_env: Path, tmp_path: Path
) -> None:
    from recsys.data.synthetic import write_synthetic
    from recsys.ingest import ingest_interactions
    from recsys.ingest.specs import CsvSpec
    from recsys.settings import get_settings
    from recsys.training.trainer import train

    csv = tmp_path / "log.csv"
    write_synthetic(csv, n_users=120, n_items=60, n_interactions=2400, seed=5)
    ingest_interactions(sqlite_engine, csv, spec=CsvSpec())
    settings = get_settings().model_copy(update={"database_url": sqlite_url})
    version = train(sqlite_engine, settings, "popularity").version

    code, stdout = run(
        "evaluate", "--version", version, "--protocol", "K", "--json", "--database-url", sqlite_url
    )
    assert code == 0, stdout
    ranked = json.loads(stdout)
    assert ranked["version"] == version and ranked["protocol"] == "K"
    assert 0.0 < ranked["metrics"]["ndcg"] <= 1.0 and ranked["metrics"]["users"] == 120
    assert "optimistic" in ranked["caveat"]  # the version was fitted on these very interactions

    code, stdout = run("evaluate", "--version", version, "--protocol", "R", "--database-url", sqlite_url)
    assert code == 0, stdout
    assert "rmse" in stdout and "optimistic" in stdout

    with pytest.raises(ConfigError, match="K or R"):
        run("evaluate", "--version", version, "--protocol", "X", "--database-url", sqlite_url)
