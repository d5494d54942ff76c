"""Labelgate router: decides, per scored label, auto-accept or human review, and why."""
