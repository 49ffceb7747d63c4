"""Tests that need no database: pure functions, parsers, the CLI without a server."""
