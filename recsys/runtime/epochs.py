"""The one epoch loop: resume, checkpoints, early stopping, best-epoch restore, logs and progress.

A model that trains in epochs supplies an :class:`EpochStep` (train one epoch, export its vectors,
hand out and take back its state as numpy arrays) and calls :func:`run_epochs`; everything else
is here, written once.

Choosing the epoch is robust to noise (:class:`StoppingRule`): the validation metric is smoothed
over a few epochs before it is compared, the choice never falls below a minimum, and patience is
counted on the smoothed curve, so one noisy sweep can neither pick the epoch nor end the fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from recsys.errors import ConfigError
from recsys.runtime.checkpoint import load_checkpoint, save_checkpoint
from recsys.runtime.monitor import EpochMonitor

logger = logging.getLogger(__name__)

#: Prefix of the best epoch's arrays in a checkpoint (next to the newest epoch's).
BEST_PREFIX = "best__"


class EpochStep(Protocol):
    """What a model supplies to the loop."""

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run epoch ``epoch`` (1-based); return its training scalars (``loss`` at least)."""

    def export(self) -> None:
        """Make the model's vectors reflect the current weights (before validating, at the end)."""

    def state(self) -> dict[str, np.ndarray]:
        """Copies of everything needed to continue: weights and optimizer slots."""

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the weights (and optimizer slots) from arrays :meth:`state` returned."""


@dataclass(frozen=True)
class StoppingRule:
    """How the validation curve decides when to stop and which epoch to keep.

    The curve is the trailing mean of the last ``window`` values of ``metric`` (fewer at the
    start). The chosen epoch is the one with the best smoothed value among epochs from
    ``min_epochs`` on (earlier ones only when the fit ran fewer); training stops once
    ``patience`` epochs passed without a better smoothed value, never before ``min_epochs``.
    """

    metric: str = "val_ndcg"
    mode: Literal["max", "min"] = "max"
    patience: int = 3
    min_epochs: int = 1
    window: int = 3

    def __post_init__(self) -> None:
        for name in ("patience", "min_epochs", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"stopping rule {name} must be at least 1, got {getattr(self, name)}")

    def smoothed(self, history: list[dict[str, Any]]) -> list[tuple[int, float]]:
        """(epoch, trailing mean) for every epoch of ``history`` that has the metric."""
        scored = [
            (int(entry["epoch"]), float(entry[self.metric])) for entry in history if self.metric in entry
        ]
        values = np.array([value for _, value in scored])
        sums = np.concatenate([[0.0], np.cumsum(values)])
        starts = np.maximum(np.arange(len(values)) + 1 - self.window, 0)
        means = (sums[1:] - sums[starts]) / (np.arange(len(values)) + 1 - starts)
        return [(epoch, float(mean)) for (epoch, _), mean in zip(scored, means, strict=True)]

    def chosen_epoch(self, history: list[dict[str, Any]]) -> int | None:
        """The epoch to keep (and the number of epochs a refit runs). Without validation values:
        every epoch that ran; None when nothing ran."""
        curve = self.smoothed(history)
        if not curve:
            return int(history[-1]["epoch"]) if history else None
        last = curve[-1][0]
        eligible = [(epoch, value) for epoch, value in curve if epoch >= min(self.min_epochs, last)]
        sign = 1.0 if self.mode == "max" else -1.0
        best_epoch, best_value = eligible[0]
        for epoch, value in eligible[1:]:
            # Better by more than rounding: equal means computed in another order must not win.
            if sign * (value - best_value) > 1e-9 * max(1.0, abs(best_value)):
                best_epoch, best_value = epoch, value
        return best_epoch

    def should_stop(self, history: list[dict[str, Any]]) -> bool:
        chosen = self.chosen_epoch(history)
        if chosen is None or not self.smoothed(history):
            return False
        last = int(history[-1]["epoch"])
        return last >= self.min_epochs and last - chosen >= self.patience


def run_epochs(
    step: EpochStep,
    *,
    name: str,
    limit: int,
    rule: StoppingRule,
    validate: Callable[[], dict[str, float]] | None = None,
    early_stopping: bool = True,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    log_dir: Path | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train up to ``limit`` epochs and return the history (one entry per epoch).

    With ``validate`` (the validation metrics of the model as it stands) and ``early_stopping``,
    the fit stops by ``rule`` and ends with the weights of the chosen epoch; otherwise it runs
    exactly ``limit`` epochs and keeps the last weights. With ``checkpoint_dir``, the state is
    saved after every epoch (the newest and the chosen one), and ``resume`` continues from there.
    """
    stopping = early_stopping and validate is not None
    history: list[dict[str, Any]] = []
    best: dict[str, np.ndarray] | None = None
    if resume and checkpoint_dir is not None:
        restored = _resume(step, name, checkpoint_dir)
        if restored is not None:
            history, best = restored
            logger.info("%s: resuming after epoch %d from %s", name, len(history), checkpoint_dir)
    chosen = rule.chosen_epoch(history)

    with EpochMonitor(
        total_epochs=limit, log_dir=log_dir, progress=progress, description=name, history=history
    ) as monitor:
        for epoch in _epochs(len(history) + 1, limit, lambda: stopping and rule.should_stop(monitor.history)):
            started = time.perf_counter()
            entry: dict[str, Any] = {"epoch": epoch, **step.train_epoch(epoch)}
            if validate is not None:
                validating = time.perf_counter()
                step.export()
                entry.update(validate())
                entry["validation_seconds"] = time.perf_counter() - validating
            entry["seconds"] = time.perf_counter() - started
            monitor.log(entry)
            chosen = rule.chosen_epoch(monitor.history)
            # The choice is this epoch or an earlier one already kept (earlier values never change).
            if stopping and chosen == epoch:
                best = step.state()
            if checkpoint_dir is not None:
                _save(step, name, checkpoint_dir, monitor.history, best)
        history = monitor.history
    if stopping and best is not None and chosen != (int(history[-1]["epoch"]) if history else None):
        step.load_state(best)
        logger.info("%s: keeping epoch %s of %d (%s)", name, chosen, len(history), rule.metric)
    step.export()
    return history


def _epochs(first: int, limit: int, stop: Callable[[], bool]) -> Iterator[int]:
    for epoch in range(first, limit + 1):
        if stop():
            return
        yield epoch


def _save(
    step: EpochStep,
    name: str,
    directory: Path,
    history: list[dict[str, Any]],
    best: dict[str, np.ndarray] | None,
) -> None:
    arrays = step.state()
    if best is not None:
        arrays.update({BEST_PREFIX + key: value for key, value in best.items()})
    save_checkpoint(directory, arrays, {"model": name, "history": history})


def _resume(
    step: EpochStep, name: str, directory: Path
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray] | None] | None:
    stored = load_checkpoint(directory)
    if stored is None:
        logger.info("%s: no checkpoint in %s; starting from the beginning", name, directory)
        return None
    arrays, state = stored
    current = step.state()
    best = {key[len(BEST_PREFIX) :]: value for key, value in arrays.items() if key.startswith(BEST_PREFIX)}
    latest = {key: value for key, value in arrays.items() if not key.startswith(BEST_PREFIX)}
    expected = {key: value.shape for key, value in current.items()}
    found = {key: value.shape for key, value in latest.items()}
    if state.get("model") != name or found != expected:
        difference = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise ConfigError(
            f"the checkpoint in {directory} does not fit this fit (model {state.get('model')!r}, "
            f"differing arrays {difference}); delete it or drop --resume"
        )
    step.load_state(latest)
    return list(state["history"]), best or None
