"""Procedural data generated exactly from a seed."""
