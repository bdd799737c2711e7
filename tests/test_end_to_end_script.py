"""benchmarks/end_to_end.py keeps each size's figures so that one plot combines separate runs; the
serve benchmark's bare app loads the way uvicorn loads it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def end_to_end() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("end_to_end", BENCHMARKS / "end_to_end.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["end_to_end"] = module  # its dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_saved_sizes_come_back_in_order_and_the_total_leaves_postgres_out(tmp_path: Path) -> None:
    e2e = end_to_end()
    big = e2e.Run(
        25_000_000, [e2e.Stage("generate", 300.0, 800.0), e2e.Stage("ingest PostgreSQL", 900.0, 400.0)]
    )
    small = e2e.Run(1_000_000, [e2e.Stage("generate", 12.0, 300.0, "bare", 1.5, "a note")])
    for run in (big, small):
        e2e.save(run, tmp_path)
    loaded = e2e.saved(tmp_path)
    assert [run.interactions for run in loaded] == [1_000_000, 25_000_000]
    assert loaded[0].stages[0] == small.stages[0]  # every field, the load average included
    assert loaded[0].stages[0].load == small.stages[0].load != ""
    assert loaded[1].total == 300.0  # the PostgreSQL ingest is beside the path, not on it


def test_plot_draws_sizes_where_a_stage_ran_at_some_sizes_only(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    e2e = end_to_end()
    runs = [
        e2e.Run(1_000_000, [e2e.Stage("generate", 10.0, 1.0), e2e.Stage("ingest PostgreSQL", 50.0, 1.0)]),
        e2e.Run(5_000_000, [e2e.Stage("generate", 40.0, 1.0)]),
    ]
    path = tmp_path / "e2e.png"
    e2e.plot(runs, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_serve_benchmarks_bare_app_imports_as_uvicorn_imports_it() -> None:
    """uvicorn loads ``benchmarks.serve_benchmark:bare_app`` from the repository root, where the
    script's sibling modules are not on the path unless the script puts them there."""
    import subprocess

    root = BENCHMARKS.parent
    imported = subprocess.run(
        [sys.executable, "-c", "import benchmarks.serve_benchmark as b; print(callable(b.bare_app))"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == "True"
