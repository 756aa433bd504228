"""fedcare.secure."""
