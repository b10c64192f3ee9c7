"""Executors (float reference, integer golden model) and their kernel registries."""
