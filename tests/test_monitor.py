"""The epoch monitor's TensorBoard scalars: a file TensorBoard reads, written without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys.runtime.monitor import EpochMonitor


def test_scalars_read_back_with_tensorboard(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with EpochMonitor(total_epochs=3, log_dir=tmp_path) as monitor:
        monitor.log({"epoch": 1, "loss": 0.5, "ndcg": 0.25})
        monitor.log({"epoch": 2, "loss": 0.375, "ndcg": 0.3125})
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(event_file))
    accumulator.Reload()
    assert set(accumulator.Tags()["scalars"]) == {"loss", "ndcg"}
    assert [(event.step, event.value) for event in accumulator.Scalars("loss")] == [(1, 0.5), (2, 0.375)]
    assert [(event.step, event.value) for event in accumulator.Scalars("ndcg")] == [(1, 0.25), (2, 0.3125)]


def test_logging_epochs_does_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from recsys.runtime.monitor import EpochMonitor\n"
        f"with EpochMonitor(total_epochs=1, log_dir=Path({str(tmp_path)!r})) as monitor:\n"
        "    monitor.log({'epoch': 1, 'loss': 1.0})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert list(tmp_path.glob("events.out.tfevents.*"))
