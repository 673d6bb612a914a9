"""Data sources: each turns some storage into a list of `Sample`s per split."""
