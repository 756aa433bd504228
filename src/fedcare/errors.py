"""The one exception hierarchy of fedcare.

Every error fedcare raises on purpose derives from :class:`FedcareError`, so a caller can catch
the whole family with one clause and a specific failure with another::

    FedcareError
    ├── ConfigError            a study file, policy or argument is invalid (names the field)
    ├── DataError              a dataset cannot be found, read or verified
    │   ├── ChecksumError      a file's SHA-256 does not match the expected value
    │   └── DatasetUnavailableError
    │                          no download, cache or mirror produced the file (names the places)
    ├── ModelError             a model adapter got parameters or data it cannot use
    ├── ValidationError        a message or update is malformed (shape, dtype, NaN, unknown site)
    ├── AggregationError       aggregation could not produce a result
    ├── RoundFailedError       a round ended with fewer than ``min_sites`` usable replies
    ├── SiteError              a site answered a task with an error (carries site and reason)
    └── TransportError         the grid could not deliver tasks or collect replies

Messages name the argument, the bad value and, where known, the site and round it came from.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ChecksumError",
    "ConfigError",
    "DataError",
    "DatasetUnavailableError",
    "FedcareError",
    "ModelError",
    "RoundFailedError",
    "SiteError",
    "TransportError",
    "ValidationError",
]


class FedcareError(Exception):
    """Base class of every error fedcare raises on purpose."""


class ConfigError(FedcareError):
    """A study file, a policy or an argument is invalid."""


class DataError(FedcareError):
    """A dataset cannot be found, read or verified."""


class ChecksumError(DataError):
    """A file's SHA-256 digest differs from the expected one."""


class DatasetUnavailableError(DataError):
    """No download, cache or mirror produced a requested file."""


class ModelError(FedcareError):
    """A model adapter got parameters or data it cannot use."""


class ValidationError(FedcareError):
    """A message, update or argument is malformed."""


class AggregationError(FedcareError):
    """Aggregation could not produce a result."""


class RoundFailedError(FedcareError):
    """A round ended with fewer usable replies than ``min_sites``; nothing was stored."""

    def __init__(self, message: str, *, round: int, replied: int, required: int) -> None:
        super().__init__(message)
        self.round = round
        self.replied = replied
        self.required = required


class SiteError(FedcareError):
    """A site answered a task with an error."""

    def __init__(self, message: str, *, site_id: str, kind: str = "error") -> None:
        super().__init__(message)
        self.site_id = site_id
        self.kind = kind


class TransportError(FedcareError):
    """The grid could not deliver tasks or collect replies."""
