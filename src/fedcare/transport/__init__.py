"""Transports: the Grid interface and its implementations."""

from fedcare.transport.base import Grid
from fedcare.transport.inmemory import InMemoryGrid, SiteHandler

__all__ = ["Grid", "InMemoryGrid", "SiteHandler"]
