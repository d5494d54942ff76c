"""Labelgate quality control, pure domain code that the router and the metrics service import.

Modules: ``calibration`` (confidence to P(correct), ECE, reliability, thresholds for a target precision),
``agreement`` (kappas, Krippendorff's alpha, span F1, box IoU, ambiguous labels), ``consensus`` (majority vote,
Dawid-Skene, reviewer accuracy on gold), ``value`` (review value and queue order), ``issues`` (label issues,
confusion), ``leakage`` (duplicates of few-shot and training data), ``economics`` (cost per final label) and
``plots`` (PNG report figures).
"""
