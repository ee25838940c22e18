"""Benchmark harness: synthetic large captures and the tool runner (issue 6)."""
