"""Logs, activation records and metrics."""
