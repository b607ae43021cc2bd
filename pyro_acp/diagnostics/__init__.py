"""Checking posteriors: clustering metrics, comparison tables, simulation-based calibration and held-out
evaluation of a trained guide."""
