"""Execute notebooks/quickstart.ipynb and write its rendered copy: docs/quickstart.md with PNGs.

The notebook stays committed without outputs; this renders what it shows, plots included, for
readers who do not run it. It runs on synthetic data, or on MovieLens-100k when
``RECSYS_MOVIELENS_DIR`` names a folder holding ``ml-100k/``.

    python scripts/render_notebook.py             # execute and rewrite docs/quickstart.md
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"
RENDERED = REPO_ROOT / "docs" / "quickstart.md"
IMAGES = REPO_ROOT / "docs" / "quickstart_files"


def execute(path: Path = NOTEBOOK, timeout: int = 900) -> Any:
    """The notebook after running every cell in a fresh kernel (working folder: its own)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return notebook


def to_markdown(notebook: Any, images: Path = IMAGES) -> str:
    """Markdown cells as they are, code in fenced blocks, text outputs as text blocks and PNG
    outputs as image files in ``images`` (linked relative to the docs folder)."""
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    parts = [
        "<!-- Rendered from notebooks/quickstart.ipynb by scripts/render_notebook.py; do not edit. -->",
        "",
    ]
    figure = 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts += [cell.source.replace("](../docs/", "]("), ""]
            continue
        if cell.cell_type != "code":
            continue
        parts += ["```python", cell.source, "```", ""]
        for output in cell.outputs:
            text = ""
            if output.output_type == "stream":
                text = output.text
            elif output.output_type in ("display_data", "execute_result"):
                data = output.get("data", {})
                if "image/png" in data:
                    figure += 1
                    name = f"figure-{figure}.png"
                    (images / name).write_bytes(base64.b64decode(data["image/png"]))
                    parts += [f"![figure {figure}]({images.name}/{name})", ""]
                    continue
                text = data.get("text/plain", "")
            elif output.output_type == "error":
                raise RuntimeError(f"the notebook failed: {output.ename}: {output.evalue}")
            if text.strip():
                parts += ["```text", text.rstrip("\n"), "```", ""]
    return "\n".join(parts)


def main() -> None:
    RENDERED.write_text(to_markdown(execute()))
    print(f"wrote {RENDERED} and {len(list(IMAGES.glob('*.png')))} images in {IMAGES}")


if __name__ == "__main__":
    main()
