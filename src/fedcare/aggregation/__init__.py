"""fedcare.aggregation."""
