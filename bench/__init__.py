"""Benchmarks: scripts that print a table (and, with --json, one JSON object as their last line)."""
