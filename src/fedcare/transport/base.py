"""The ``Grid`` interface the transports implement; it lives in the core (:mod:`fedcare.grid`).

Re-exported here for code that knew it under ``fedcare.transport.base``.
"""

from fedcare.grid import Grid, Split

__all__ = ["Grid", "Split"]
