"""Procedural data and answer checking that the engine and several systems share (a system's own
tasks live in its package)."""
