"""fedcare.dashboard."""
