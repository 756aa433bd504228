"""Federated statistics."""
