"""Hardware detection for training, done once: TensorFlow import, devices and distribution strategy.

TensorFlow is imported here (and only by modules that train) because importing it costs seconds;
serving and data code never touch this module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
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


@functools.cache
def distribution_strategy() -> Any:
    """``MirroredStrategy`` over every GPU when there are any, else the default (CPU) strategy.

    When the CPU was split into several logical devices (:func:`split_cpu_for_testing`), the
    strategy mirrors over them, which exercises the multi-device path without a GPU.
    """
    tf = import_tensorflow()
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
