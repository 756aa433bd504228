"""fedcare.data."""
