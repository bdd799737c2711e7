"""The committed API reference matches the service's OpenAPI schema."""

from __future__ import annotations

import importlib.util
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
