"""The embedded reference world: data, networks, training recipes and shipped weights."""
