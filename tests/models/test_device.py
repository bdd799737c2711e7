"""Device detection: the CPU fallback, and MF training mirrored over logical CPU devices."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys.runtime import device

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_tensorflow_returns_one_module() -> None:
    assert device.import_tensorflow() is device.import_tensorflow()


def test_without_a_gpu_the_default_strategy_is_used_quietly(caplog: pytest.LogCaptureFixture) -> None:
    tf = device.import_tensorflow()
    if tf.config.list_logical_devices("GPU"):
        pytest.fail("this test describes the CPU-only machine the suite runs on")
    device.distribution_strategy.cache_clear()
    with caplog.at_level(logging.INFO, logger="recsys.runtime.device"):
        first = device.distribution_strategy()
        second = device.distribution_strategy()
    assert first is second
    assert first.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    # A CPU machine trains on the CPU without saying so; only GPUs get the one device line.
    assert [record.getMessage() for record in caplog.records] == []


def test_mixed_precision_stays_off_on_the_cpu() -> None:
    assert device.use_mixed_precision(False) is False
    assert device.use_mixed_precision(True) is False


def test_split_cpu_refuses_bad_counts_and_late_calls() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        device.split_cpu_for_testing(0)
    tf = device.import_tensorflow()
    tf.constant(1.0) + 1.0  # the runtime is initialised from here on
    with pytest.raises(ConfigError, match="before TensorFlow is initialised"):
        device.split_cpu_for_testing(2)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "tests")
    from recsys.runtime.device import distribution_strategy, split_cpu_for_testing

    split_cpu_for_testing(2)  # before anything initialises TensorFlow
    from models.contract import planted_data
    from recsys.evaluation import evaluate_ranking
    from recsys.models.mf import MatrixFactorization

    data = planted_data()
    model = MatrixFactorization(
        factors=16, epochs=20, batch_size=256, optimizer="adam", learning_rate=0.02,
        final_lr_fraction=0.05, regularization=0.02, bias_regularization=0.01,
    ).fit(data.train)
    print(json.dumps({
        "replicas": distribution_strategy().num_replicas_in_sync,
        "losses": [entry["loss"] for entry in model.history],
        "train_rmse": model.history[-1]["rmse"],
        "recall": evaluate_ranking(model, data.train, data.test)["recall"],
    }))
    """
)


def test_mf_trains_mirrored_over_two_logical_cpu_devices() -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["losses"][-1] < 0.5 * report["losses"][0]
    assert report["train_rmse"] < 0.5
    assert report["recall"] >= 0.7
