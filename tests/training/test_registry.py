"""Model registry: atomic writes, checksums, statuses, promotion guard, rollback (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from recsys.cli import app
from recsys.data.interactions import IdMap
from recsys.db.engine import session_scope
from recsys.db.models import ModelVersion
from recsys.errors import ArtifactError, RegistryError
from recsys.models.popularity import Popularity
from recsys.registry import artifacts as artifacts_module
from recsys.registry import versions as versions_module
from recsys.registry.comparison import SPLIT_KEY, metric_notes, split_record
from recsys.registry.registry import CHECKSUMS_FILE, ModelRegistry
from recsys.settings import get_settings

N_USERS, N_ITEMS = 12, 8


def fitted_popularity(seed: int = 0) -> Popularity:
    rng = np.random.default_rng(seed)
    matrix = sp.random(N_USERS, N_ITEMS, density=0.4, random_state=rng, format="csr", dtype=np.float32)
    return Popularity().fit(matrix)


def id_maps() -> tuple[IdMap, IdMap]:
    return IdMap(np.array([f"user-{u}" for u in range(N_USERS)])), IdMap(
        np.array([f"é-{i}" for i in range(N_ITEMS)])
    )


def register(registry: ModelRegistry, ndcg: float | None = 0.3, baseline: float = 0.2, seed: int = 0) -> str:
    users, items = id_maps()
    metrics = {} if ndcg is None else {"ndcg@10": ndcg, "baseline_ndcg@10": baseline}
    info = registry.register(
        fitted_popularity(seed), users, items, metrics=metrics, watermark=1234, data_fingerprint="f" * 64
    )
    return info.version


def visible_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


@pytest.fixture
def registry(engine: Engine, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(engine, tmp_path / "artifacts")


def test_register_writes_a_complete_version_and_load_round_trips(registry: ModelRegistry) -> None:
    model = fitted_popularity()
    users, items = id_maps()
    info = registry.register(
        model, users, items, metrics={"ndcg@10": 0.5}, watermark=99, data_fingerprint="a" * 64
    )

    assert re.fullmatch(r"popularity-\d{14}-[0-9a-f]{6}", info.version)
    assert info.status == "production"  # the first version becomes production
    assert info.promoted_at is not None
    assert info.path == registry.artifact_dir / info.version
    manifest = json.loads((info.path / "version.json").read_text())
    assert manifest["watermark"] == 99
    assert manifest["data_fingerprint"] == "a" * 64
    assert manifest["metrics"] == {"ndcg@10": 0.5}
    assert manifest["libraries"]["numpy"] == np.__version__
    listed = {line.split("  ", 1)[1] for line in (info.path / CHECKSUMS_FILE).read_text().splitlines()}
    assert {"version.json", "id_maps.npz", "model/model.json", "model/arrays.npz"} <= listed

    loaded = registry.load()  # production
    assert loaded.info.version == info.version
    assert loaded.users.to_list() == users.to_list()
    assert loaded.items.to_list() == items.to_list()  # non-ASCII ids survive without pickle
    matrix = sp.csr_matrix(np.eye(N_USERS, N_ITEMS, dtype=np.float32))
    expected = model.recommend(np.arange(N_USERS), matrix, N=5)
    actual = loaded.model.recommend(np.arange(N_USERS), matrix, N=5)
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_allclose(actual[1], expected[1])


def test_a_crash_while_writing_leaves_no_visible_version(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed while writing checksums")

    monkeypatch.setattr(artifacts_module, "_write_checksums", crash)
    with pytest.raises(RuntimeError, match="killed"):
        register(registry)
    assert visible_entries(registry.artifact_dir) == []
    assert registry.list() == []


def test_a_failed_database_insert_removes_the_published_folder(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(versions_module, "_production_row", crash)
    with pytest.raises(RuntimeError, match="went away"):
        register(registry)
    assert visible_entries(registry.artifact_dir) == []
    with session_scope(registry.engine) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_flipped_byte_refuses_to_load_naming_the_file(registry: ModelRegistry) -> None:
    version = register(registry)
    target = registry.get(version).path / "model" / "arrays.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model/arrays\.npz does not match its checksum"):
        registry.load(version)


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hashed: list[str] = []
    real = artifacts_module._sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(artifacts_module, "_sha256", counting)
    return hashed


def test_a_load_hashes_the_files_again_only_after_one_changed(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts_module, "RECENT_NS", 50_000_000)  # 50 ms, not 2 s: no long wait
    version = register(registry)
    path = registry.get(version).path
    listed = len((path / CHECKSUMS_FILE).read_text().splitlines())
    time.sleep(0.1)
    hashed = _count_hashes(monkeypatch)
    registry.load(version)
    assert len(hashed) == listed >= 5  # the first load hashes every file, and records them
    registry.load(version)
    assert len(hashed) == listed  # unchanged since: not hashed again
    registry.verify(version)  # an explicit check (`recsys models show`, promotion) always hashes
    assert len(hashed) == 2 * listed
    time.sleep(0.1)
    flip_a_byte(path / "model" / "arrays.npz")  # same size, new content
    with pytest.raises(ArtifactError, match=r"model/arrays\.npz does not match its checksum"):
        registry.load(version)


def test_files_written_just_before_a_verification_are_hashed_at_every_load(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # File times tick coarsely: a file written in the same tick as the hashing could change
    # again without its times changing, so such a verification is not recorded.
    version = register(registry)
    hashed = _count_hashes(monkeypatch)
    registry.load(version)
    first = len(hashed)
    registry.load(version)
    assert len(hashed) == 2 * first > 0
    assert not (registry.get(version).path / artifacts_module.VERIFIED_FILE).exists()


@pytest.mark.parametrize("removed", ["id_maps.npz", "model/model.json", CHECKSUMS_FILE])
def test_an_incomplete_version_is_refused(registry: ModelRegistry, removed: str) -> None:
    version = register(registry)
    (registry.get(version).path / removed).unlink()
    with pytest.raises(ArtifactError, match=re.escape(removed)):
        registry.load(version)


def test_promotion_is_refused_below_the_baseline_unless_forced(registry: ModelRegistry) -> None:
    first = register(registry, ndcg=0.30, baseline=0.20)
    weak = register(registry, ndcg=0.1234, baseline=0.2140)
    assert registry.get(weak).status == "candidate"

    with pytest.raises(RegistryError, match=r"0\.1234.*0\.2140") as refused:
        registry.promote(weak)
    assert "--force" in str(refused.value)
    assert registry.production().version == first  # type: ignore[union-attr]

    assert registry.promote(weak, force=True).status == "production"
    assert registry.get(first).status == "candidate"


def test_promotion_without_validation_metrics_needs_force(registry: ModelRegistry) -> None:
    register(registry)
    bare = register(registry, ndcg=None)
    with pytest.raises(RegistryError, match="no validation ndcg@10"):
        registry.promote(bare)
    assert registry.promote(bare, force=True).status == "production"


def production_versions(registry: ModelRegistry) -> list[str]:
    return [info.version for info in registry.list(status="production")]


def test_rollback_walks_back_through_promotions(registry: ModelRegistry) -> None:
    v1 = register(registry)
    v2 = register(registry)
    v3 = register(registry)
    registry.promote(v2)
    registry.promote(v3)
    assert production_versions(registry) == [v3]

    assert registry.rollback().version == v2
    assert registry.get(v3).status == "archived"
    assert registry.rollback().version == v1
    assert registry.get(v2).status == "archived"
    assert production_versions(registry) == [v1]
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()

    v4 = register(registry)
    registry.promote(v4)
    assert registry.rollback().version == v1  # archived versions are never restored
    assert production_versions(registry) == [v1]


def test_rollback_without_production_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no production version"):
        registry.rollback()


def test_archive_refuses_production_and_hides_a_version_from_rollback(registry: ModelRegistry) -> None:
    v1 = register(registry)
    v2 = register(registry)
    with pytest.raises(RegistryError, match="is the production version"):
        registry.archive(v1)
    registry.promote(v2)
    assert registry.archive(v1).status == "archived"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert [info.version for info in registry.list(status="archived")] == [v1]


def test_list_get_and_unknown_versions(registry: ModelRegistry) -> None:
    older = register(registry)
    newer = register(registry)
    assert [info.version for info in registry.list()] == [newer, older]
    assert registry.list(model="ials") == []
    with pytest.raises(RegistryError, match="no model version 'nope'"):
        registry.get("nope")
    with pytest.raises(RegistryError, match="unknown status"):
        registry.list(status="retired")


def test_load_without_production_says_how_to_get_one(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="recsys train"):
        registry.load()


def test_attach_adds_a_checksummed_folder_and_replaces_it(registry: ModelRegistry) -> None:
    version = register(registry)
    path = registry.attach(version, "index", lambda folder: (folder / "vectors.bin").write_bytes(b"first"))
    assert (path / "vectors.bin").read_bytes() == b"first"
    checksums = (registry.get(version).path / CHECKSUMS_FILE).read_text()
    assert "  index/vectors.bin\n" in checksums
    registry.load(version)

    registry.attach(version, "index", lambda folder: (folder / "other.bin").write_bytes(b"second"))
    assert sorted(p.name for p in path.iterdir()) == ["other.bin"]
    checksums = (registry.get(version).path / CHECKSUMS_FILE).read_text()
    assert "index/vectors.bin" not in checksums and "  index/other.bin\n" in checksums
    assert visible_entries(registry.get(version).path) == sorted(
        ["checksums.sha256", "id_maps.npz", "index", "model", "seen", "version.json"]
    )

    (path / "other.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match=r"index/other\.bin"):
        registry.load(version)


def test_attach_that_fails_changes_nothing(registry: ModelRegistry) -> None:
    version = register(registry)
    before = (registry.get(version).path / CHECKSUMS_FILE).read_text()

    def failing(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("index build failed")

    with pytest.raises(RuntimeError):
        registry.attach(version, "index", failing)
    root = registry.get(version).path
    assert not (root / "index").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
    assert (root / CHECKSUMS_FILE).read_text() == before
    with pytest.raises(RegistryError, match="plain folder name"):
        registry.attach(version, "../escape", failing)


def test_rating_models_are_guarded_by_rmse_against_the_mean_rating(registry: ModelRegistry) -> None:
    users, items = id_maps()
    register(registry)

    def rating_version(rmse: float) -> str:
        metrics = {"rmse": rmse, "baseline_rmse": 1.10, "ndcg@10": 0.0, "baseline_ndcg@10": 0.3}
        return registry.register(
            fitted_popularity(), users, items, metrics=metrics, watermark=1, data_fingerprint="0" * 64
        ).version

    worse = rating_version(1.2345)
    with pytest.raises(RegistryError, match=r"rmse 1\.2345, worse than the mean-rating baseline 1\.1000"):
        registry.promote(worse)
    better = rating_version(0.91)  # its nDCG is below popularity, but it is judged on ratings
    assert registry.promote(better).status == "production"


def test_concurrent_promotions_leave_exactly_one_production(registry: ModelRegistry) -> None:
    versions = [register(registry) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda v: registry.promote(v), versions[1:]))
    assert len(production_versions(registry)) == 1
    assert {info.status for info in registry.list()} == {"production", "candidate"}


def test_remove_orphans_deletes_only_old_leftovers(registry: ModelRegistry) -> None:
    kept = register(registry)
    root = registry.artifact_dir
    leftovers = [
        root / ".tmp-ials-20240101000000-abcdef",
        root / ".work" / "ials-x",
        root / "ials-unregistered",
    ]
    for path in leftovers:
        path.mkdir(parents=True)
    (root / "ials-unregistered" / "version.json").write_text("{}")
    (root / "checkpoints" / "ials-abc").mkdir(parents=True)

    assert registry.remove_orphans() == []  # all young: maybe a registration in progress
    old = time.time() - 2 * 24 * 3600
    for path in [*leftovers, registry.get(kept).path, root / "checkpoints"]:
        os.utime(path, (old, old))
    assert sorted(registry.remove_orphans()) == sorted(leftovers)
    assert visible_entries(root) == ["checkpoints", kept]
    registry.load(kept)


# --- damaged versions and leftovers ------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_promote_refuses_a_damaged_version_even_with_force(registry: ModelRegistry) -> None:
    first = register(registry)
    damaged = register(registry, seed=1)
    flip_a_byte(registry.get(damaged).path / "model" / "arrays.npz")
    for force in (False, True):
        with pytest.raises(
            ArtifactError, match=rf"{damaged} is damaged .*model/arrays\.npz does not match its checksum"
        ):
            registry.promote(damaged, force=force)
    production = registry.production()
    assert production is not None and production.version == first


def test_clean_removes_the_folder_a_killed_index_build_left(registry: ModelRegistry) -> None:
    version = register(registry)
    root = registry.get(version).path

    def killed_while_writing(folder: Path) -> None:
        (folder / "index.faiss").write_bytes(b"half an index")
        os.kill(os.getpid(), signal.SIGKILL)

    def build_index() -> None:
        registry.engine.dispose(close=False)  # the child must not share the parent's connections
        registry.attach(version, "index", killed_while_writing)

    child = multiprocessing.get_context("fork").Process(target=build_index)
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    leftovers = sorted(root.glob(".tmp-index-*"))
    assert len(leftovers) == 1

    assert registry.remove_orphans(min_age_seconds=3600) == []  # young: may be a build in progress
    assert registry.remove_orphans(min_age_seconds=0) == leftovers
    assert not any(path.name.startswith(".") for path in root.iterdir())
    assert registry.load(version).info.version == version  # the version itself stays intact


def test_models_show_and_promote_refuse_a_damaged_version_through_the_cli(
    sqlite_engine: Engine, sqlite_url: str, settings_env: Path
) -> None:
    registry = ModelRegistry(sqlite_engine, get_settings().artifacts)
    first = register(registry)
    damaged = register(registry, seed=1)
    runner = CliRunner()

    healthy = runner.invoke(app, ["models", "show", first, "--json", "--database-url", sqlite_url])
    assert healthy.exit_code == 0, healthy.output
    assert json.loads(healthy.stdout)["checksums"] == "ok"

    flip_a_byte(registry.get(damaged).path / "id_maps.npz")
    shown = runner.invoke(app, ["models", "show", damaged, "--json", "--database-url", sqlite_url])
    assert shown.exit_code == 1
    assert json.loads(shown.stdout)["checksums"].startswith("FAILED")
    assert isinstance(shown.exception, ArtifactError)  # recsys.cli.main prints it as one line
    assert "id_maps.npz does not match its checksum" in str(shown.exception)
    promoted = runner.invoke(app, ["models", "promote", damaged, "--force", "--database-url", sqlite_url])
    assert promoted.exit_code == 1
    assert f"version {damaged} is damaged" in str(promoted.exception)
    production = registry.production()
    assert production is not None and production.version == first

    (registry.get(first).path / ".tmp-index-0a1b2c").mkdir()
    cleaned = runner.invoke(app, ["models", "clean", "--min-age-hours", "0", "--database-url", sqlite_url])
    assert cleaned.exit_code == 0, cleaned.output
    assert "1 leftover folders removed" in cleaned.stdout


def test_metric_notes_mark_in_sample_and_other_split_metrics(registry: ModelRegistry) -> None:
    users, items = id_maps()

    def version(split: dict[str, object] | None, seed: int) -> str:
        metrics: dict[str, object] = {"ndcg@10": 0.3, "baseline_ndcg@10": 0.2}
        if split is not None:
            metrics[SPLIT_KEY] = split
        model = fitted_popularity(seed)
        return registry.register(
            model, users, items, metrics=metrics, watermark=1, data_fingerprint="f" * 64
        ).version

    same = split_record("held-out", "a" * 64, seed=43)
    production = version(same, 0)  # the first version is production
    comparable = version(split_record("held-out", "a" * 64, seed=43), 1)
    other_data = version(split_record("held-out", "b" * 64, seed=43), 2)
    other_seed = version(split_record("held-out", "a" * 64, seed=44), 3)
    warm = version(split_record("in-sample", "a" * 64, seed=43), 4)
    old = version(None, 5)

    notes = metric_notes(registry.list())
    assert notes == {
        production: "",
        comparable: "",
        other_data: "other split",
        other_seed: "other split",
        warm: "in-sample",
        old: "split not recorded",
    }
    # Without a production version nothing is a reference, but in-sample figures stay marked.
    assert metric_notes([registry.get(other_data), registry.get(warm)]) == {other_data: "", warm: "in-sample"}


def test_add_metrics_records_a_later_backtest_next_to_the_training_metrics(registry: ModelRegistry) -> None:
    version = register(registry, ndcg=0.3, baseline=0.2)
    info = registry.add_metrics(
        version, {"backtest_ndcg@10": np.float32(0.25), "backtest_split": {"kind": "temporal"}}
    )
    assert info.metrics == {
        "ndcg@10": 0.3,
        "baseline_ndcg@10": 0.2,
        "backtest_ndcg@10": pytest.approx(0.25),
        "backtest_split": {"kind": "temporal"},
    }
    assert json.loads((info.path / "version.json").read_text())["metrics"] == {
        "ndcg@10": 0.3,
        "baseline_ndcg@10": 0.2,
    }
    registry.load(version)  # version.json and its checksums are untouched
    with pytest.raises(RegistryError, match="no model version"):
        registry.add_metrics("popularity-missing", {"backtest_ndcg@10": 0.1})
