"""fedcare.models."""
