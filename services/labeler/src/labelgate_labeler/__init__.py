"""Labelgate."""
