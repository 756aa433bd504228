"""Transports: implementations of the Grid interface (:mod:`fedcare.grid`, re-exported here)."""

from fedcare.grid import Grid
from fedcare.transport.inmemory import InMemoryGrid, SiteHandler

__all__ = ["Grid", "InMemoryGrid", "SiteHandler"]
