"""The documents: the API reference matches the OpenAPI schema, nothing points outside the
repository or to issues, links resolve, benchmark reports embed their plots."""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "api_docs.py"


def test_api_reference_is_in_sync_with_openapi() -> None:
    spec = importlib.util.spec_from_file_location("api_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, expected in module.rendered().items():
        assert path.read_text() == expected, f"{path.name} is stale: run `python scripts/api_docs.py`"
    text = (SCRIPT.parents[1] / "docs" / "api.md").read_text()
    for endpoint in ("GET /users/{user_id}/recommendations", "POST /interactions", "GET /ready"):
        assert endpoint in text


REPO_ROOT = SCRIPT.parents[1]
#: What a clone does not have, and what a reader cannot look up.
OUTSIDE_REFERENCES = re.compile(r"shared/|BENCHMARK_PROTOCOL|\bissues? \d+|\bissue #\d+", re.IGNORECASE)


def _documents() -> list[Path]:
    """Everything a reader reads: the README, docs, notebooks, and the code (for docstrings)."""
    files = [REPO_ROOT / "README.md", *REPO_ROOT.glob("docs/**/*.md"), *REPO_ROOT.glob("notebooks/*.ipynb")]
    for folder in ("recsys", "service", "pipelines", "benchmarks", "scripts", "docker"):
        files += [p for p in (REPO_ROOT / folder).rglob("*") if p.suffix in {".py", ".yml", ".md"}]
    files += list((REPO_ROOT / "docker").glob("Dockerfile.*"))
    return files


def test_documents_are_self_contained() -> None:
    offending = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in _documents()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert offending == []


def test_relative_links_in_docs_resolve() -> None:
    for path in [REPO_ROOT / "README.md", *REPO_ROOT.glob("docs/*.md")]:
        for target in re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
    readme = (REPO_ROOT / "README.md").read_text()
    assert "(docs/data.md)" in readme and "(docs/protocol.md)" in readme


def test_benchmark_report_embeds_its_plots_with_plain_permissions(tmp_path: Path) -> None:
    out = tmp_path / "report"
    previous = os.umask(0o022)
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "recsys",
                "benchmark",
                "--quick",
                "--dataset",
                "synthetic",
                "--models",
                "popularity",
                "--protocol",
                "K",
                "--out",
                str(out),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        os.umask(previous)
    assert run.returncode == 0, run.stderr
    report = (out / "report.md").read_text()
    plots = sorted(path.name for path in out.glob("*.png"))
    assert plots and all(f"]({name})" in report for name in plots)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
