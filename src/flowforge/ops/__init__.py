"""Operator tools behind ``scripts/`` (seed-database.py, healthcheck.py, cleanup.py).

The scripts are thin launchers; the code lives here so it shares configuration
(``flowforge.config``), connections (``flowforge.db``) and SQL (``flowforge.queries``)
with the services, and so the tests measure it.
"""
