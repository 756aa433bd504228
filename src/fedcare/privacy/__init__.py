"""fedcare.privacy."""
