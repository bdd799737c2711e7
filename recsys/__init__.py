"""recsys: collaborative filtering from SQL ingestion to FAISS-backed serving."""

import os

# TensorFlow Recommenders needs Keras 2; this must be set before TensorFlow is first imported,
# and importing any part of recsys comes first in every entry point.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
