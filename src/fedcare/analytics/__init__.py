"""fedcare.analytics."""
