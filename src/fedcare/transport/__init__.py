"""fedcare.transport."""
