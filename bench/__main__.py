from bench.cli import _entry

_entry()
