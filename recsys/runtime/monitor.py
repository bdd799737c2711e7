"""What every epoch-based fit reports: TensorBoard scalars, and a progress bar on a terminal or
plain log lines elsewhere (a cron job's log file gets one line per epoch, not bar drawings)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from recsys.runtime.device import import_tensorflow

if TYPE_CHECKING:
    from rich.progress import Progress

logger = logging.getLogger(__name__)


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
        self._writer = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = import_tensorflow().summary.create_file_writer(str(log_dir))
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
            tf = import_tensorflow()
            with self._writer.as_default():
                for key, value in entry.items():
                    if key != "epoch":
                        tf.summary.scalar(key, value, step=int(entry["epoch"]))
            self._writer.flush()
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
