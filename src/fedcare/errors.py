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
    │   └── TransferIncompleteError
    │                          a chunked transfer ended before its declared size (cut link)
    ├── AggregationError       aggregation could not produce a result
    ├── RoundFailedError       a round ended with fewer than ``min_sites`` usable replies
    ├── PrivacyBudgetError     a round would spend more epsilon than the study's budget
    ├── SiteError              a site answered a task with an error (carries site and reason)
    ├── TransportError         the grid could not deliver tasks or collect replies
    │   └── AuthenticationError
    │                          a peer's certificate is missing, foreign, revoked or lacks a
    │                          site identity
    ├── PackageError           a study package is malformed or tampered with, its signature does
    │                          not verify, or its signer is not a researcher of this federation
    ├── ApiError               the coordinator's HTTP API refused a request (``status``, the
    │                          server's detail) or could not be reached (``status`` None)
    ├── AuditError             an audit log is corrupt, disagrees with its signed head
    │                          checkpoint, is signed with another key, or could not be written
    └── StoreError             the coordinator's database or artifact folder refused an operation
        ├── NotFoundError      no site, study, round, task or artifact has that id or digest
        ├── ConflictError      the change contradicts stored state (duplicate round, a status
        │   │                  transition that is not allowed); nothing was changed
        │   └── ReplyRefusedError
        │                      a site's reply was refused (carries ``reason``, task and site)
        └── ArtifactCorruptError
                               a stored artifact's bytes no longer hash to its digest

Messages name the argument, the bad value and, where known, the site and round it came from.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ApiError",
    "ArtifactCorruptError",
    "AuditError",
    "AuthenticationError",
    "ChecksumError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "DatasetUnavailableError",
    "FedcareError",
    "ModelError",
    "NotFoundError",
    "PackageError",
    "PrivacyBudgetError",
    "ReplyRefusedError",
    "RoundFailedError",
    "SiteError",
    "StoreError",
    "TransferIncompleteError",
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


class TransferIncompleteError(ValidationError):
    """A chunked transfer ended before its declared size: the link was cut, or it stalled."""


class AggregationError(FedcareError):
    """Aggregation could not produce a result."""


class PrivacyBudgetError(FedcareError):
    """A round would bring epsilon above the budget declared for it; it was not started."""


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


class AuditError(FedcareError):
    """An audit log cannot be extended safely (corrupt tail, head mismatch, foreign key) or
    a write to it failed; the message says whether anything reached the disk."""


class ApiError(FedcareError):
    """The coordinator's HTTP API refused a request, or could not be reached.

    ``status`` is the HTTP status (401, 403, 404, 409, 422, 429...) and the message the server's
    one-line ``detail``; ``status`` is None when no answer came (connection refused, a TLS
    certificate not trusted, a timeout): then the message names the URL and the cause.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = message


class PackageError(FedcareError):
    """A study package cannot be trusted: unreadable, a file added, missing or changed, a bad
    signature, or a signer not certified as a researcher by the federation's CA."""


class StoreError(FedcareError):
    """The coordinator's database or artifact folder refused or could not do an operation."""


class NotFoundError(StoreError):
    """No site, study, round, task or artifact has the given id or digest."""


class ConflictError(StoreError):
    """The requested change contradicts the stored state; nothing was changed."""


class ReplyRefusedError(ConflictError):
    """A site's reply to a task was refused; nothing was stored.

    ``reason`` is one of ``unknown_task``, ``wrong_site``, ``site_inactive``, ``not_delivered``,
    ``expired``, ``round_closed`` (its deadline-bound round closed, or its asynchronous study
    cancelled it: the late reply is recorded, never aggregated), ``already_answered``,
    ``study_not_running`` or ``payload_missing``.
    """

    def __init__(self, message: str, *, reason: str, task_id: str, site_id: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.task_id = task_id
        self.site_id = site_id


class ArtifactCorruptError(StoreError):
    """A stored artifact's bytes no longer hash to the digest it is stored under."""

    def __init__(self, message: str, *, digest: str, actual: str) -> None:
        super().__init__(message)
        self.digest = digest
        self.actual = actual


class AuthenticationError(TransportError):
    """A peer's certificate is missing, from another CA, revoked or lacks a site identity."""
