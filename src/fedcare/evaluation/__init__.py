"""fedcare.evaluation."""
