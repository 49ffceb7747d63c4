"""Tests on a real PostgreSQL (started by conftest.py), over real HTTP, with real
`flowforge` processes."""
