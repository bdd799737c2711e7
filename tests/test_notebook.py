"""The quickstart notebook: committed without outputs, runs top to bottom in a temporary folder
(never the user's RECSYS_DATA_DIR), shows its plots inline with no TensorFlow noise, and its
rendered copy in docs/ matches it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"
RENDERED = REPO_ROOT / "docs" / "quickstart.md"
NOISE = re.compile(r"cuInit|cudart|cuda_|absl|oneDNN|TF-TRT|^[IWE]\d{4} |tensorflow", re.MULTILINE)


def _render_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "render_notebook", REPO_ROOT / "scripts" / "render_notebook.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_committed_without_outputs_and_plots_inline() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells)
    source = "\n".join(cell.source for cell in notebook.cells)
    assert "matplotlib.use(" not in source  # a non-interactive backend would hide every plot
    assert "shared/" not in source


def test_rendered_copy_matches_the_notebook() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    rendered = RENDERED.read_text()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert f"```python\n{cell.source}\n```" in rendered, "docs/quickstart.md is stale"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", rendered)
    assert len(images) >= 3  # long tail, model comparison, training curves
    assert all((RENDERED.parent / image).is_file() for image in images)


@pytest.mark.slow
def test_notebook_executes_in_a_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users_folder = tmp_path / "users-data-dir"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(users_folder))  # must stay untouched
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"sqlite:///{users_folder / 'recsys.db'}")
    notebook = _render_script().execute(NOTEBOOK)

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert not users_folder.exists()
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 3
    text = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", "")) for out in outputs
    )
    assert not NOISE.search(text), NOISE.search(text)
    assert "100,000 loaded" in text
    assert re.search(r"Synthetic item \d+|\(19\d\d\)", text)  # recommendations come with titles
    assert "after a click on" in text
