"""Shared infrastructure: config, metrics, statistics, reporting, seeding, atomic files."""
