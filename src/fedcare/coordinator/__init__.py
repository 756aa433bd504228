"""fedcare.coordinator."""
