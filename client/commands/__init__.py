"""Subcommand groups, each imported lazily by client.cli."""
