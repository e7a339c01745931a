"""Executors run planned cells: `local` (isolated worker processes) and `ray` (a cluster)."""
