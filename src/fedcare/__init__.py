"""fedcare: federated learning and analytics for hospitals."""
