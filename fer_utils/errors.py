"""Exceptions with messages meant for people: each names the file/field and what is wrong."""


class FERError(Exception):
    """Base class of the package's errors."""


class DataError(FERError, ValueError):
    """A data set on disk is missing, malformed or inconsistent (message names file and line)."""


class ConfigError(FERError, ValueError):
    """A parameter/config is unknown or has the wrong type or value (message names the key)."""


class WeightsNotFoundError(FERError, FileNotFoundError):
    """Pretrained weights are not available locally and cannot be downloaded."""
