"""Simulation: the coordinator and site logic in one process over an in-memory grid."""
