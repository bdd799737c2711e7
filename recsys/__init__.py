"""recsys: collaborative filtering from SQL ingestion to FAISS-backed serving."""

import os

# TensorFlow Recommenders needs Keras 2; this must be set before TensorFlow is first imported,
# and importing any part of recsys comes first in every entry point.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ runtime logs to stderr; at 3 it keeps only fatal messages (on a CPU machine it
# otherwise reports failed CUDA probes and oneDNN fallbacks that read like errors). Errors that
# matter reach Python as exceptions. The lines absl prints before it is initialised are filtered
# by recsys.runtime.device.import_tensorflow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
