"""The shared epoch loop and its stopping rule, on scripted validation curves with known answers."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.runtime.checkpoint import load_checkpoint
from recsys.runtime.epochs import BEST_PREFIX, StoppingRule, run_epochs


def history(values: list[float], metric: str = "val_ndcg") -> list[dict[str, float]]:
    return [{"epoch": epoch, metric: value} for epoch, value in enumerate(values, start=1)]


class ScriptedStep:
    """A model whose weight counts its epochs and whose validation value follows a script."""

    def __init__(self, curve: list[float]) -> None:
        self.curve = curve
        self.weight = np.zeros(1)
        self.exported = -1.0
        self.trained: list[int] = []

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.trained.append(epoch)
        self.weight = self.weight + 1
        return {"loss": 1.0 / epoch}

    def export(self) -> None:
        self.exported = float(self.weight[0])

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weight = arrays["weight"].copy()

    def validate(self) -> dict[str, float]:
        return {"val_ndcg": self.curve[int(self.exported) - 1]}


# --- the rule ----------------------------------------------------------------------------------


def test_one_noisy_peak_neither_wins_nor_ends_the_fit() -> None:
    # A rising curve with a lucky second epoch: the raw maximum is epoch 2.
    curve = [0.30, 0.42, 0.39, 0.40, 0.41, 0.41, 0.41, 0.40, 0.40, 0.40]
    rule = StoppingRule(patience=3, window=3)
    assert int(np.argmax(curve)) + 1 == 2
    assert [epoch for epoch, _ in rule.smoothed(history(curve))] == list(range(1, 11))
    assert rule.smoothed(history(curve))[2][1] == pytest.approx((0.30 + 0.42 + 0.39) / 3)
    assert rule.chosen_epoch(history(curve)) == 7  # smoothed: 0.41 = mean of epochs 5 to 7
    # Raw patience would have stopped at epoch 5 (three epochs without beating 0.42).
    assert not any(rule.should_stop(history(curve[:n])) for n in range(1, 10))
    assert rule.should_stop(history(curve))


def test_the_minimum_bounds_the_choice_unless_the_fit_ran_fewer_epochs() -> None:
    falling = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    rule = StoppingRule(min_epochs=5, window=1, patience=1)
    assert rule.chosen_epoch(history(falling)) == 5
    assert rule.chosen_epoch(history(falling[:3])) == 3  # a warm start's short run
    assert not rule.should_stop(history(falling[:4]))  # never before the minimum
    assert rule.should_stop(history(falling))


def test_min_mode_and_no_validation() -> None:
    rmse = [1.0, 0.9, 0.85, 0.86, 0.9]
    assert StoppingRule(metric="val_rmse", mode="min", window=1).chosen_epoch(history(rmse, "val_rmse")) == 3
    assert StoppingRule().chosen_epoch([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]) == 2
    assert StoppingRule().chosen_epoch([]) is None
    with pytest.raises(ConfigError, match="window"):
        StoppingRule(window=0)


def test_the_choice_is_robust_across_validation_seeds() -> None:
    """The measured failure, scripted: validation nDCG that has nearly plateaued after two sweeps
    (the iALS curve with ratings as confidence on ml-100k), measured with noise. Over many noise
    seeds, raw early stopping sometimes keeps epoch 1 or 2; the smoothed rule never does, and the
    true quality of what it keeps is higher on average."""
    truth = np.array([0.300, 0.396, 0.401, 0.404, 0.406, 0.4065, 0.407, 0.4073, 0.4075, 0.4077, 0.4078])
    truth = np.concatenate([truth, np.full(4, 0.408)])  # 15 sweeps, as the default limit
    raw, robust = StoppingRule(window=1, patience=3), StoppingRule(window=3, patience=3)
    raw_picks, robust_picks = [], []
    for seed in range(200):
        observed = truth + np.random.default_rng(seed).normal(0.0, 0.006, len(truth))
        for rule, picks in ((raw, raw_picks), (robust, robust_picks)):
            ran = next(
                n
                for n in range(1, len(truth) + 1)
                if n == len(truth) or rule.should_stop(history(list(observed[:n])))
            )
            picks.append(rule.chosen_epoch(history(list(observed[:ran]))))
    raw_picks_array, robust_picks_array = np.array(raw_picks), np.array(robust_picks)
    assert (raw_picks_array <= 2).mean() > 0.02  # the failure is reproduced
    assert (robust_picks_array <= 2).sum() == 0
    assert truth[robust_picks_array - 1].mean() > truth[raw_picks_array - 1].mean()


# --- the loop ----------------------------------------------------------------------------------


def test_early_stopping_restores_the_chosen_epoch() -> None:
    curve = [0.1, 0.3, 0.5, 0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2]
    step = ScriptedStep(curve)
    rule = StoppingRule(window=1, patience=2)
    ran = run_epochs(step, name="scripted", limit=10, rule=rule, validate=step.validate)
    assert [entry["epoch"] for entry in ran] == [1, 2, 3, 4, 5, 6]
    assert step.weight[0] == 4 and step.exported == 4  # the weights of epoch 4, exported
    assert all({"loss", "val_ndcg", "seconds"} <= entry.keys() for entry in ran)


def test_without_early_stopping_every_epoch_runs_and_the_last_is_kept() -> None:
    step = ScriptedStep([0.6, 0.5, 0.4])
    ran = run_epochs(step, name="scripted", limit=3, rule=StoppingRule(window=1, patience=1),
                     validate=step.validate, early_stopping=False)  # fmt: skip
    assert len(ran) == 3 and step.weight[0] == 3


def test_resume_continues_after_the_checkpointed_epoch(tmp_path: Path) -> None:
    curve = [0.1, 0.3, 0.5, 0.6, 0.55, 0.5, 0.45]
    rule = StoppingRule(window=1, patience=2)
    first = ScriptedStep(curve)

    class Killed(Exception):
        pass

    def die_after_epoch_5() -> dict[str, float]:
        scores = first.validate()
        if first.exported == 5:
            raise Killed
        return scores

    with pytest.raises(Killed):
        run_epochs(
            first, name="scripted", limit=10, rule=rule, validate=die_after_epoch_5, checkpoint_dir=tmp_path
        )
    stored = load_checkpoint(tmp_path)
    assert stored is not None
    arrays, state = stored
    assert [entry["epoch"] for entry in state["history"]] == [1, 2, 3, 4]
    assert arrays[BEST_PREFIX + "weight"][0] == 4

    second = ScriptedStep(curve)
    ran = run_epochs(
        second,
        name="scripted",
        limit=10,
        rule=rule,
        validate=second.validate,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    assert second.trained == [5, 6]  # only what the killed run had not finished
    assert [entry["epoch"] for entry in ran] == [1, 2, 3, 4, 5, 6]
    assert second.weight[0] == 4
    with pytest.raises(ConfigError, match="does not fit"):
        run_epochs(
            ScriptedStep(curve), name="other-model", limit=10, rule=rule, checkpoint_dir=tmp_path, resume=True
        )


def test_off_a_terminal_each_epoch_is_one_log_line_with_loss_and_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = ScriptedStep([0.1, 0.2])
    with caplog.at_level(logging.INFO, logger="recsys.runtime"):
        history = run_epochs(
            step, name="scripted", limit=2, rule=StoppingRule(), validate=step.validate, progress=True
        )
    lines = [record.getMessage() for record in caplog.records if "epoch" in record.getMessage()]
    assert lines[0].startswith("scripted epoch 1/2: loss=1 val_ndcg=0.1 (")
    assert lines[1].startswith("scripted epoch 2/2: loss=0.5 val_ndcg=0.2 (")
    # the epoch's seconds, and those of its validation (recorded in the history too)
    assert re.search(r"\(\d+\.\d s, validation \d+\.\d s\)$", lines[0]), lines[0]
    assert all(0 <= entry["validation_seconds"] <= entry["seconds"] for entry in history)
