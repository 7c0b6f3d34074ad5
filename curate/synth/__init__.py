"""Synthesis: candidates per failure cluster (driver and CLI, strategies, the teacher)."""
