"""Scoring every cutout with the classifier resident on the workers, and candidates."""
