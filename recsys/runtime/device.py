"""Hardware detection for training, done once: TensorFlow import, devices and distribution strategy.

TensorFlow is imported here (and only by modules that train) because importing it costs seconds;
serving and data code never touch this module.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import recsys  # noqa: F401  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
from recsys.errors import ConfigError
from recsys.settings import get_settings

logger = logging.getLogger(__name__)


#: What TensorFlow's C++ runtime writes to stderr while it starts on a machine without a GPU: absl's
#: pre-initialisation banner, INFO lines (oneDNN, "could not find cuda drivers") and the failed CUDA
#: probes. TF_CPP_MIN_LOG_LEVEL does not reach the lines absl prints before it is initialised.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|I\d{4} "
    r"|[WE]\d{4} .*(cuInit|cuda_|cudart|cuDNN|cuFFT|cuBLAS|TF-TRT|computation_placer))"
)


@contextlib.contextmanager
def _startup_stderr_filtered() -> Iterator[None]:
    """Hold the process's stderr (file descriptor 2, where C++ writes) while TensorFlow starts, then
    pass on every line that is not start-up noise, so real errors still show."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().decode(errors="replace").splitlines(keepends=True)
                if not _STARTUP_NOISE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def gpu_possible() -> bool:
    """Whether TensorFlow could find a GPU here, answered without importing it (seconds): False
    only when no GPU driver shows itself (no NVIDIA device or driver files, no WSL GPU device) or
    ``CUDA_VISIBLE_DEVICES`` hides every GPU. CPU-only paths ask this first, so that a CPU
    machine training iALS never imports TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    drivers = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")
    return any(Path(path).exists() for path in drivers)


@functools.cache
def import_tensorflow() -> ModuleType:
    """The TensorFlow module, configured once per process (thread counts from settings).

    The import and the first device query (where CUDA is probed) run with TensorFlow's start-up
    chatter filtered out of stderr, and TensorFlow's Python logger is set to errors only.
    """
    with _startup_stderr_filtered():
        import tensorflow as tf

        # Probing the GPUs loads the CUDA platform (and prints its failures) once, here.
        gpus = tf.config.list_physical_devices("GPU")
    # The one line about devices: which GPU(s) train; on a CPU machine, nothing at INFO.
    if gpus:
        logger.info("training on %d GPU(s): %s", len(gpus), ", ".join(gpu.name for gpu in gpus))
    else:
        logger.debug("no GPU found, training on the CPU")
    tf.get_logger().setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)

    threads = get_settings().tf_threads
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime already started (for example in a notebook): keep it
            logger.warning("TensorFlow already initialised; RECSYS_TF_THREADS=%d ignored", threads)
    return tf


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker ``TF_CONFIG`` cluster."""

    task_type: str
    index: int
    workers: int
    """Tasks that train (``chief`` and ``worker`` together)."""
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The task that writes (registers the version): ``chief``, or worker 0 without one."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.index == 0 and not self.has_chief


def worker_role() -> WorkerRole | None:
    """The ``TF_CONFIG`` role of this process when it names a cluster of two or more training
    tasks, else None (one machine). A malformed ``TF_CONFIG`` is a clear error."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster = config["cluster"]
        task = config["task"]
        task_type, index = str(task["type"]), int(task["index"])
        counts = {kind: len(cluster.get(kind, [])) for kind in ("chief", "worker")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}: {exc}'
        ) from exc
    if sum(counts.values()) < 2:
        return None
    if task_type not in counts or not 0 <= index < counts[task_type]:
        raise ConfigError(f"TF_CONFIG's task {task_type}:{index} is not in its cluster {cluster}")
    return WorkerRole(task_type, index, sum(counts.values()), has_chief=counts["chief"] > 0)


def is_chief() -> bool:
    """Whether this process writes what training produces: always on one machine."""
    role = worker_role()
    return role is None or role.is_chief


@functools.cache
def distribution_strategy() -> Any:
    """The strategy models train under.

    - ``TF_CONFIG`` naming two or more workers: ``MultiWorkerMirroredStrategy``, each worker a
      replica (its GPUs, else its CPU); every worker runs the same training and each global batch
      is split among them, gradients summed by collective all-reduce.
    - Else ``MirroredStrategy`` over every GPU when there are any, else the default (CPU) one.

    When the CPU was split into several logical devices (:func:`split_cpu_for_testing`), the
    strategy mirrors over them, which exercises the multi-device path without a GPU.
    """
    tf = import_tensorflow()
    role = worker_role()
    if role is not None:
        logger.info(
            "training as %s %d of a %d-worker TF_CONFIG cluster", role.task_type, role.index, role.workers
        )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        logger.debug("mirroring over %d GPU(s)", len(gpus))
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        logger.debug("no GPU found, mirroring over %d logical CPU devices", len(cpus))
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def split_cpu_for_testing(n: int) -> None:
    """Split the physical CPU into ``n`` logical devices, to test multi-device training.

    Must run before TensorFlow initialises its runtime (before any op or device query), so tests
    call it at the start of a fresh process.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    tf = import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as exc:
        raise ConfigError(
            "split_cpu_for_testing must run before TensorFlow is initialised; "
            "call it first thing in a fresh process"
        ) from exc
    distribution_strategy.cache_clear()


def use_mixed_precision(enabled: bool) -> bool:
    """Turn on float16 compute with float32 variables when asked and a GPU is present.

    Returns whether mixed precision is active; on the CPU it would only be slower, so it stays off.
    """
    if not enabled:
        return False
    tf = import_tensorflow()
    if not tf.config.list_logical_devices("GPU"):
        logger.info("mixed precision requested but no GPU found; training in float32")
        return False
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    return True
