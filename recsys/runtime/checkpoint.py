"""Per-epoch training checkpoints: numpy arrays plus a JSON state, replaced atomically.

A killed process leaves either the previous checkpoint or the new one, never a torn file,
because the new file is fully written and fsynced under a temporary name and then renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactError

CHECKPOINT_FILE = "checkpoint.npz"
_STATE_KEY = "__state__"


def save_checkpoint(directory: Path, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON-serialisable ``state`` to ``directory/checkpoint.npz``."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays, **{_STATE_KEY: np.array(json.dumps(state))})  # type: ignore[arg-type]
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and state of the checkpoint in ``directory``, or None when there is none."""
    target = directory / CHECKPOINT_FILE
    if not target.is_file():
        return None
    try:
        with np.load(target) as stored:
            arrays = {key: stored[key] for key in stored.files}
        state: dict[str, Any] = json.loads(str(arrays.pop(_STATE_KEY)))
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"checkpoint {target} is unreadable ({exc}); delete it to start over") from exc
    return arrays, state
