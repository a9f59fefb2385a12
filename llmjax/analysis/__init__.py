"""Analyses that several systems share (a system's own probes live in its package)."""
