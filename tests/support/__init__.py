"""Helpers shared by the tests: running the dashboard, spawning workloads."""
