"""fedcare.site."""
