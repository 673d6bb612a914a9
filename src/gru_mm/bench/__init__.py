"""Benchmarks (gru-mm-bench)."""
