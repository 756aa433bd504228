"""fedcare.strategy."""
