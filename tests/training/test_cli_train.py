"""`recsys train`, `recsys tune` and `recsys models` through the CLI (CliRunner, SQLite)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import ConfigError, RegistryError

Seeder = Callable[..., None]
runner = CliRunner()


@pytest.fixture
def seeded(sqlite_engine: Engine, sqlite_url: str, settings_env: Path, seeder: Seeder) -> str:
    seeder(sqlite_engine)
    return sqlite_url


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_train_json_summary(seeded: str, settings_env: Path) -> None:
    summary = json.loads(invoke("train", "--model", "popularity", "--json", "--database-url", seeded))
    assert {"version", "model", "params", "metrics", "fit_seconds", "status"} <= summary.keys()
    assert summary["model"] == "popularity"
    assert summary["params"] == {"seed": 42, "window_seconds": None}
    assert summary["status"] == "production"
    assert summary["fit_seconds"] == summary["metrics"]["fit_seconds"] >= 0
    assert 0 < summary["metrics"]["ndcg@10"] == pytest.approx(summary["metrics"]["baseline_ndcg@10"])
    assert Path(summary["path"]).parent == settings_env / "artifacts"


def test_train_prints_the_version_and_models_commands_manage_it(seeded: str) -> None:
    first = invoke("train", "-m", "popularity", "--database-url", seeded).strip().splitlines()[-1]
    second = invoke(
        "train",
        "-m",
        "popularity",
        "--param",
        "window_seconds=2000",
        "--kinds",
        "rating",
        "--database-url",
        seeded,
    ).strip()
    assert first.startswith("popularity-") and second.startswith("popularity-") and first != second

    listed = json.loads(invoke("models", "list", "--json", "--database-url", seeded))
    assert [(v["version"], v["status"]) for v in listed] == [(second, "candidate"), (first, "production")]

    shown = json.loads(invoke("models", "show", second, "--json", "--database-url", seeded))
    assert shown["params"]["window_seconds"] == 2000
    assert shown["training"]["recipe"]["kinds"] == ["rating"]
    assert shown["libraries"]["numpy"]
    assert second in invoke("models", "show", second, "--database-url", seeded)

    assert f"{second} is production" in invoke("models", "promote", second, "--database-url", seeded)
    assert f"{first} is production again" in invoke("models", "rollback", "--database-url", seeded)
    statuses = {
        v["version"]: v["status"]
        for v in json.loads(invoke("models", "list", "--json", "--database-url", seeded))
    }
    assert statuses == {first: "production", second: "archived"}

    result = runner.invoke(app, ["models", "archive", first, "--database-url", seeded])
    assert isinstance(result.exception, RegistryError) and "production version" in str(result.exception)


def test_train_without_model_trains_the_default_model(seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.settings import get_settings

    monkeypatch.setenv("RECSYS_DEFAULT_MODEL", "popularity")
    get_settings.cache_clear()
    summary = json.loads(invoke("train", "--json", "--database-url", seeded))
    assert summary["model"] == "popularity"
    assert summary["recipe"] == {
        "kinds": None, "weights": {}, "combine": "last", "values": "binary", "threshold": None
    }  # fmt: skip


def test_recipe_flags_override_the_model_recipe_and_are_stored(seeded: str, sqlite_engine: Engine) -> None:
    from sqlalchemy import insert, select

    from recsys.db.models import Interaction

    with sqlite_engine.begin() as connection:  # 12 "view" events on 6 pairs (each viewed twice)
        pairs = connection.execute(select(Interaction.user_id, Interaction.item_id).limit(6)).all()
        connection.execute(
            insert(Interaction),
            [
                {"user_id": u, "item_id": i, "kind": "view", "value": 2.0, "ts": 3_000_000 + n}
                for n, (u, i) in enumerate(pairs * 2)
            ],
        )
    flags = ["--kinds", "rating", "--kinds", "view", "--weight", "view=0.5", "--combine", "sum"]
    summary = json.loads(invoke("train", "-m", "popularity", *flags, "--json", "--database-url", seeded))
    assert summary["recipe"] == {
        "kinds": ["rating", "view"], "weights": {"view": 0.5}, "combine": "sum", "values": "binary",
        "threshold": None,
    }  # fmt: skip
    shown = json.loads(invoke("models", "show", summary["version"], "--json", "--database-url", seeded))
    assert shown["training"]["recipe"] == summary["recipe"]
    assert shown["training"]["interactions"] == 60 * 9  # the views fall on rated pairs: summed in

    result = runner.invoke(app, ["train", "-m", "popularity", "--weight", "view", "--database-url", seeded])
    assert isinstance(result.exception, ConfigError) and "kind=weight" in str(result.exception)
    result = runner.invoke(app, ["train", "-m", "popularity", "--combine", "mean", "--database-url", seeded])
    assert isinstance(result.exception, ConfigError) and "last, sum, max" in str(result.exception)


def test_bad_param_is_named(seeded: str) -> None:
    result = runner.invoke(
        app, ["train", "-m", "popularity", "--param", "window_seconds=soon", "--database-url", seeded]
    )
    assert isinstance(result.exception, ConfigError)
    assert "window_seconds='soon'" in str(result.exception)
    result = runner.invoke(app, ["train", "-m", "popularity", "-p", "factors=8", "--database-url", seeded])
    assert "unknown parameter 'factors'" in str(result.exception)
    result = runner.invoke(app, ["train", "-m", "svd", "--database-url", seeded])
    assert "unknown model 'svd'" in str(result.exception)


def test_promote_flag_through_the_cli(seeded: str) -> None:
    invoke("train", "-m", "popularity", "--database-url", seeded)
    summary = json.loads(invoke("train", "-m", "popularity", "--promote", "--json", "--database-url", seeded))
    assert summary["status"] == "production"  # equal to its own baseline: not below it


def test_tune_popularity_runs_one_trial(seeded: str) -> None:
    result = json.loads(
        invoke("tune", "-m", "popularity", "--trials", "5", "--json", "--database-url", seeded)
    )
    assert result["metric"] == "ndcg@10" and result["direction"] == "maximize"
    assert len(result["trials"]) == 1  # nothing to search
    assert result["best_params"] == {}
    assert result["best_value"] == pytest.approx(result["trials"][0]["metrics"]["baseline_ndcg@10"])
    table = invoke("tune", "-m", "popularity", "--trials", "1", "--register", "--database-url", seeded)
    assert "best ndcg@10" in table and "registered popularity-" in table


def test_training_job_holds_the_training_lock(
    settings_env: Path, seeder: Seeder, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.train import TRAINING_LOCK, main, run_training
    from recsys.db import get_engine, upgrade
    from recsys.errors import LockError
    from recsys.settings import get_settings
    from recsys.training.locks import DatabaseLock, holder_of

    settings = get_settings()
    engine = get_engine(settings.database_url)
    upgrade(engine)
    seeder(engine)
    with DatabaseLock(engine, TRAINING_LOCK, stale_after=3600), pytest.raises(LockError, match="training"):
        run_training(settings, "popularity")

    main(["--model", "popularity", "--param", "window_seconds=500"])
    version = capsys.readouterr().out.strip()
    assert version.startswith("popularity-")
    assert holder_of(engine, TRAINING_LOCK) is None


def test_models_clean_removes_old_leftovers(seeded: str, settings_env: Path) -> None:
    leftover = settings_env / "artifacts" / ".tmp-ials-20240101000000-abcdef"
    leftover.mkdir(parents=True)
    assert "0 leftover folders removed" in invoke("models", "clean", "--database-url", seeded)
    assert leftover.is_dir()
    output = invoke("models", "clean", "--min-age-hours", "0", "--database-url", seeded)
    assert "1 leftover folders removed" in output and not leftover.exists()


def test_a_user_error_outside_recsys_errors_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path), "RECSYS_PROMOTION_TOLERANCE": "-1"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "train", "--model", "popularity"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "PROMOTION_TOLERANCE" in done.stderr and "Traceback" not in done.stderr


def test_progress_shows_every_epoch_with_json_and_off_a_terminal(seeded: str, settings_env: Path) -> None:
    """`recsys train --json` with stdout and stderr piped (as under cron or CI): stdout is only the
    JSON summary, and stderr has one line per epoch with its time, loss and validation metric."""
    import os
    import re
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "recsys", "train", "--model", "ials", "--param", "factors=8",
         "--param", "epochs=3", "--param", "min_epochs=1", "--json", "--database-url", seeded],
        env={**os.environ, "RECSYS_DATA_DIR": str(settings_env)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "ials"
    assert re.search(r"read \d+ interactions in [\d.]+ s", done.stderr)  # before the fit starts
    validated = re.findall(
        r"ials epoch (\d)/3: loss=[\d.e-]+ val_ndcg=[\d.e-]+ \([\d.]+ s, validation [\d.]+ s\)", done.stderr
    )
    assert validated[:1] == ["1"], done.stderr  # the validated fit, from its first epoch on
    assert "ials: validation nDCG@10" in done.stderr  # the final validation, then the refit
    assert re.search(r"refitting ials on all \d+ interactions", done.stderr)
    assert re.search(r"ials epoch 1/\d: loss=[\d.e-]+ \([\d.]+ s\)", done.stderr)
