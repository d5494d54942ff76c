"""Labelgate's labeler: proposes labels for submitted items, scores its confidence, and learns from reviews."""
