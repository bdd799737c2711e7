"""The lead-owned foundations: settings, id maps, interaction logs, the exact index and the CLI frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from recsys.cli import app
from recsys.data.interactions import IdMap, Interactions
from recsys.db import ensure_current, get_engine
from recsys.errors import DataError, SchemaError
from recsys.index.exact import ExactIndex
from recsys.settings import Settings, get_settings


def test_settings_defaults_follow_data_dir(settings_env: Path) -> None:
    settings = get_settings()
    assert settings.data_dir == settings_env
    assert settings.database_url == f"sqlite:///{settings_env / 'recsys.db'}"
    assert settings.artifacts == settings_env / "artifacts"


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_id_map_round_trip_and_unknown_ids() -> None:
    ids = IdMap(np.array(["a", "b", "c"], dtype=object))
    assert ids.index("b") == 1
    assert ids.index("zz") is None
    assert ids.indices(["c", "zz", "a"]).tolist() == [2, -1, 0]
    with pytest.raises(DataError, match="duplicate"):
        IdMap(np.array(["a", "a"], dtype=object))


def test_interactions_to_csr_matches_hand_built_matrix() -> None:
    data = Interactions.from_arrays(["u1", "u2", "u1"], ["i1", "i1", "i2"], [5.0, 3.0, 1.0])
    assert data.users.to_list() == ["u1", "u2"]
    assert data.items.to_list() == ["i1", "i2"]
    expected = np.array([[5.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(data.to_csr().toarray(), expected)
    assert len(data.subset(data.values > 2)) == 2


def test_interactions_reject_misaligned_arrays() -> None:
    users = IdMap(np.array(["u"], dtype=object))
    with pytest.raises(DataError, match="values has 2 entries"):
        Interactions(users, users, np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(2), np.zeros(1))


def test_exact_index_excludes_and_pads() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 3)).astype(np.float32)
    queries = rng.normal(size=(2, 3)).astype(np.float32)
    index = ExactIndex(items)
    exclude = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 4])), shape=(2, 6))
    ids, scores = index.search(queries, k=8, exclude=exclude)
    full = queries @ items.T
    # Row 0: four allowed items in score order, then padding.
    allowed = [i for i in np.argsort(-full[0]) if i not in (1, 4)]
    assert ids[0, :4].tolist() == allowed
    assert ids[0, 4:].tolist() == [-1] * 4 and np.isneginf(scores[0, 4:]).all()
    assert ids[1, :6].tolist() == np.argsort(-full[1]).tolist()
    np.testing.assert_allclose(scores[1, :6], np.sort(full[1])[::-1], rtol=1e-6)


def test_exact_index_rejects_wrong_query_width() -> None:
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        ExactIndex(np.ones((3, 4), np.float32)).search(np.ones((1, 2)), k=1)


def test_schema_check_says_how_to_fix(sqlite_url: str) -> None:
    with pytest.raises(SchemaError, match="recsys db upgrade"):
        ensure_current(get_engine(sqlite_url))


def test_cli_db_upgrade_creates_schema(sqlite_url: str) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    ensure_current(get_engine(sqlite_url))
