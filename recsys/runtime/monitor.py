"""What every epoch-based fit reports: TensorBoard scalars, and a progress bar on a terminal or
plain log lines elsewhere (a cron job's log file gets one line per epoch, not bar drawings)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress

logger = logging.getLogger(__name__)


class ScalarWriter:
    """TensorBoard scalars in an event file, written without TensorFlow.

    ``tf.summary`` would import TensorFlow (seconds) into every fit, also those that never use it
    (iALS on the CPU); TensorBoard's own record format and protocol buffers write the same file
    (``events.out.tfevents.*``, which ``tensorboard --logdir`` reads)."""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
        self._records = RecordWriter(open(log_dir / name, "wb"))  # noqa: SIM115  # closed by close()
        self._records.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(
            value=[Summary.Value(tag=tag, simple_value=float(value)) for tag, value in values.items()]
        )
        self._records.write(Event(wall_time=time.time(), step=step, summary=summary).SerializeToString())
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class EpochMonitor:
    """Records one entry per epoch (``history`` may hold the entries of a resumed fit) and reports
    it: TensorBoard when ``log_dir`` is given, a rich progress bar when ``progress`` is asked for
    and stderr is a terminal, otherwise an INFO log line per epoch with its loss and metrics."""

    def __init__(
        self,
        *,
        total_epochs: int,
        log_dir: Path | None = None,
        progress: bool = False,
        description: str = "training",
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.history: list[dict[str, Any]] = list(history or [])
        self.total_epochs = total_epochs
        self.description = description
        self._writer = ScalarWriter(log_dir) if log_dir is not None else None
        self._progress: Progress | None = None
        if progress and sys.stderr.isatty():
            from rich.progress import Progress  # only a fit on a terminal draws one (not a service)

            self._progress = Progress(transient=False)
        self._task = None
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total_epochs, completed=len(self.history))

    def __enter__(self) -> EpochMonitor:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()

    def log(self, entry: dict[str, Any]) -> None:
        """Record an epoch: ``entry`` holds ``epoch`` and scalars."""
        self.history.append(entry)
        if self._writer is not None:
            self._writer.scalars(
                int(entry["epoch"]), {key: value for key, value in entry.items() if key != "epoch"}
            )
        shown = " ".join(
            f"{key}={value:.4g}"
            for key, value in entry.items()
            if key not in ("epoch", "seconds", "validation_seconds")
        )
        timing = f"{entry.get('seconds', 0.0):.1f} s"
        if "validation_seconds" in entry:
            timing += f", validation {entry['validation_seconds']:.1f} s"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=f"{shown} ({timing})")
        else:
            logger.info(
                "%s epoch %d/%d: %s (%s)", self.description, entry["epoch"], self.total_epochs, shown, timing
            )
