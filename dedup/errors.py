"""One family of typed errors, classified by who must act.

The core raises these; the gRPC layer maps them to status codes (service/convert.py) and the
CLIs map them to exit codes. Nothing else catches and re-labels them.
"""

from __future__ import annotations


class DedupError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidItem(DedupError):
    """The caller sent content we refuse (bad encoding, over a limit). Caller must act."""

    def __init__(self, reason: str, limit: str | None = None):
        self.reason = reason
        self.limit = limit
        super().__init__(reason if limit is None else f"{reason} (limit: {limit})")


class LimitExceeded(InvalidItem):
    """A size limit was exceeded (bytes, pixels, text length, batch size, k)."""


class InvalidArgument(DedupError):
    """A request parameter (not the content) is wrong. Caller must act."""


class NotFound(DedupError):
    """The named seed, snapshot or space does not exist."""


class ModelMismatch(DedupError):
    """Embeddings of different model weights would be mixed in one space. Operator must act."""


class SnapshotError(DedupError):
    """A snapshot is missing, incomplete or inconsistent. Operator must act."""


class StoreError(DedupError):
    """The LMDB store failed (corrupted, unreadable). Operator must act."""


class StorageFull(StoreError):
    """The disk under the store is full: nothing was written; retry after space is freed."""


class Overloaded(DedupError):
    """Too much work queued; the caller should back off and retry (after ``retry_after_s``
    seconds when the service can tell)."""

    def __init__(self, message: str = "", retry_after_s: float | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Unauthenticated(DedupError):
    """No or unknown credentials."""


class PermissionDenied(DedupError):
    """Known caller, but its role does not allow this call."""
