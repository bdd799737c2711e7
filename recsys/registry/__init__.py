"""The model registry: versioned, checksummed artifacts and their lifecycle in the database.

:class:`ModelRegistry` is the entry point; the work is split along the registry's seams into
``artifacts`` (folder layout, atomic publish, checksums, leftovers), ``versions`` (the status
state machine in the database), ``promotion`` (which versions may become production) and
``comparison`` (which versions' metrics can be read side by side).
"""

from recsys.registry.registry import BASELINE_PREFIX, LoadedVersion, ModelRegistry, VersionInfo

__all__ = ["BASELINE_PREFIX", "LoadedVersion", "ModelRegistry", "VersionInfo"]
