"""Labelgate quality control: calibration, agreement, consensus, review value, label issues, leakage and cost."""
