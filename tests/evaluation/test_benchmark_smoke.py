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
    models = ["popularity", "ials", "mf", "ease", "ease-reference", "implicit-als", "surprise-svd"]
    expected_k = {"popularity", "ials", "mf", "ease", "ease-reference"} | (
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
    # EASE registered as a recsys model is benchmarked by name alone, next to the reference peer;
    # each row says what it learned from.
    assert rows_k["ease"]["kind"] == "recsys" and rows_k["ease-reference"]["kind"] == "peer"
    assert rows_k["ease"]["recipe"]["values"] == "binary"
    assert "through its recipe" in rows_k["ease"]["data"]
    assert rows_k["ease-reference"]["data"] == "the protocol's matrix: every train rating a 1"
    assert rows_k["ials"]["version"].startswith("ials-")  # registered as recsys train registers
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


def test_check_relative_to_a_peer_of_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.settings import get_settings

    monkeypatch.setenv("RECSYS_DEFAULT_MODEL", "popularity")
    get_settings.cache_clear()
    path = tmp_path / "relative.json"
    rule = {"dataset": "synthetic", "protocol": "K", "model": "default", "metric": "ndcg", "op": ">="}
    path.write_text(json.dumps([{**rule, "bound": 1.0, "relative_to": "ease-reference"}]))
    common = ["benchmark", "--dataset", "synthetic", "--quick", "--protocol", "K", "--check"]
    models = ["--models", "popularity,ease-reference"]
    code, stdout = run(*common, *models, "--out", str(tmp_path / "a"), "--thresholds", str(path))
    get_settings.cache_clear()
    assert code == 1  # popularity, the default here, is below EASE on the planted data
    assert "CHECK FAILED: popularity ndcg" in stdout and "(1.0 x ease-reference)" in stdout
    check = json.loads((tmp_path / "a" / "results.json").read_text())["checks"][0]
    rows = json.loads((tmp_path / "a" / "results.json").read_text())["protocols"]["K"]["rows"]
    reference = next(row for row in rows if row["model"] == "ease-reference")["metrics"]["ndcg"]
    assert check["bound"] == pytest.approx(reference)


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


def test_the_benchmark_and_recsys_train_give_identical_vectors_on_the_same_split(
    tmp_path: Path, settings_env: Path
) -> None:
    """The benchmark's fit of a model on the Protocol K train part is exactly what `recsys train`
    gives a user whose database holds that train part."""
    import shutil

    import numpy as np
    from sqlalchemy import delete, select

    from pipelines.benchmark_movielens import Options, fit_recsys_model, load_dataset
    from recsys.data.splits import protocol_k_split
    from recsys.db.engine import get_engine
    from recsys.db.models import Interaction, Item, User
    from recsys.registry.registry import ModelRegistry
    from recsys.settings import get_settings

    scratch = tmp_path / "benchmark"
    scratch.mkdir()
    options = Options(dataset="synthetic", quick=True, seed=42)
    dataset, engine = load_dataset("synthetic", None, 42, True, None, scratch)
    train, _ = protocol_k_split(dataset.data, seed=options.seed)
    benchmarked = fit_recsys_model("ials", options, train, None, ModelRegistry(engine, scratch / "artifacts"))

    # The user's database: the same ingested tables, holding only the train part's interactions.
    user_db = tmp_path / "user.db"
    engine.dispose()  # closing the connections checkpoints SQLite's write-ahead log into the file
    shutil.copy(scratch / "benchmark.db", user_db)
    user_engine = get_engine(f"sqlite:///{user_db}")
    users, items = train.users.external_ids, train.items.external_ids
    kept = set(zip(users[train.user_index], items[train.item_index], strict=True))
    with user_engine.begin() as connection:
        rows = connection.execute(
            select(Interaction.id, User.external_id, Item.external_id)
            .join(User, User.id == Interaction.user_id)
            .join(Item, Item.id == Interaction.item_id)
        ).all()
        dropped = [row[0] for row in rows if (row[1], row[2]) not in kept]
        connection.execute(delete(Interaction).where(Interaction.id.in_(dropped)))
    url = f"sqlite:///{user_db}"
    code, stdout = run(
        "train", "--model", "ials", "--param", "iterations=2", "--json", "--database-url", url
    )  # the benchmark's --quick epoch cap, otherwise the user's defaults
    assert code == 0, stdout
    version = json.loads(stdout)["version"]
    trained = ModelRegistry(user_engine, get_settings().artifacts).load(version).model

    assert len(dropped) >= len(dataset.data) - len(train) > 0  # the test part (and --quick's cut users)
    assert benchmarked.model.user_factors is not None and trained.user_factors is not None
    np.testing.assert_array_equal(trained.item_factors, benchmarked.model.item_factors)
    np.testing.assert_array_equal(trained.user_factors, benchmarked.model.user_factors)
    assert benchmarked.epochs == json.loads(stdout)["metrics"]["best_epoch"]
