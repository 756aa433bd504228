"""fedcare.audit."""
