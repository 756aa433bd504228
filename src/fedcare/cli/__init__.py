"""fedcare.cli."""
