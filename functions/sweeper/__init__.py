"""Sweeper Lambda: re-enqueues runs that stopped making progress."""
