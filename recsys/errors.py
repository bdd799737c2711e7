"""The exception hierarchy. Messages carry the offending values and, where there is one, the fix."""


class RecsysError(Exception):
    """Base of every error recsys raises on purpose."""


class DataError(RecsysError):
    """Input data is malformed or inconsistent."""


class SchemaError(RecsysError):
    """The database schema is missing or not at the current migration."""


class ConfigError(RecsysError):
    """A setting or model parameter is invalid."""


class NotFittedError(RecsysError):
    """A model was used before it was fitted or loaded."""


class UnknownIdError(RecsysError, KeyError):
    """A user or item id is not known to the model or database."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArtifactError(RecsysError):
    """A stored model version is missing, incomplete or corrupt."""


class RegistryError(RecsysError):
    """A model-registry operation is not allowed (for example promotion below the baseline)."""


class LockError(RecsysError):
    """Another process holds a lock this operation needs."""


class DatabaseUnavailableError(RecsysError):
    """The database stopped answering (or refused a connection) during an operation."""
