"""fedcare.simulation."""
