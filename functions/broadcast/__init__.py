"""Broadcast Lambda: pushes log entries and run outcomes from the table stream (DESIGN.md §6)."""
