"""Measurements of what a policy does: continuation exactness, steering."""
