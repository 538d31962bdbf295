"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class VaekitError(Exception):
    """Base of every error caused by user input (config, data, run directory)."""


class ConfigError(VaekitError):
    """A config file or override names an unknown key, a wrong type or an impossible value."""


class DataError(VaekitError):
    """A dataset file is missing, truncated, of the wrong format or fails its checksum."""


class RunError(VaekitError):
    """A run directory is missing, incomplete or was made by an incompatible config."""
