"""What every epoch-based fit reports: history, TensorBoard scalars, a progress bar, early stopping."""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from rich.progress import Progress

from recsys.runtime.device import import_tensorflow


class EpochMonitor:
    """Records one entry per epoch and decides when validation stopped improving.

    ``metric`` names the entry key watched for early stopping (``"val_ndcg"``, ``"val_rmse"``);
    ``mode`` says whether larger or smaller is better. ``history`` may hold the entries of a
    resumed fit; they are kept and the best-so-far is recomputed from them.
    """

    def __init__(
        self,
        *,
        total_epochs: int,
        metric: str,
        mode: Literal["max", "min"],
        patience: int,
        log_dir: Path | None = None,
        progress: bool = False,
        description: str = "training",
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.metric, self.mode, self.patience = metric, mode, patience
        self.history: list[dict[str, Any]] = list(history or [])
        self.best_epoch = 0
        self.best_value = -math.inf if mode == "max" else math.inf
        for entry in self.history:
            self._consider(entry)
        self._writer = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = import_tensorflow().summary.create_file_writer(str(log_dir))
        self._progress = Progress(transient=False) if progress else None
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

    def _consider(self, entry: dict[str, Any]) -> bool:
        value = entry.get(self.metric)
        if value is None:
            return False
        better = value > self.best_value if self.mode == "max" else value < self.best_value
        if better:
            self.best_value, self.best_epoch = float(value), int(entry["epoch"])
        return bool(better)

    def log(self, entry: dict[str, Any]) -> bool:
        """Record an epoch (``entry`` holds ``epoch`` and scalars); True when it is the new best."""
        self.history.append(entry)
        improved = self._consider(entry)
        if self._writer is not None:
            tf = import_tensorflow()
            with self._writer.as_default():
                for key, value in entry.items():
                    if key != "epoch":
                        tf.summary.scalar(key, value, step=int(entry["epoch"]))
            self._writer.flush()
        if self._progress is not None and self._task is not None:
            shown = " ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch")
            self._progress.update(self._task, advance=1, description=shown)
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs passed without improving the watched metric."""
        if not self.history or self.best_epoch == 0:
            return False
        return int(self.history[-1]["epoch"]) - self.best_epoch >= self.patience
