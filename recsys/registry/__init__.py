"""The model registry: versioned, checksummed artifacts and their lifecycle in the database."""

from recsys.registry.registry import BASELINE_PREFIX, LoadedVersion, ModelRegistry, VersionInfo

__all__ = ["BASELINE_PREFIX", "LoadedVersion", "ModelRegistry", "VersionInfo"]
