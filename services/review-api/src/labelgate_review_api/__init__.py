"""Labelgate's review API: projects, items, the human review queue and final labels, over REST."""

__version__ = "0.1.0"
