"""The database side, one store per aggregate, each with its SQL beside it as named
constants (psycopg's ``%(name)s`` placeholders; psycopg prepares a statement on the server
after a few runs on one connection, so hot queries skip parse and plan).

Its modules are listed in CONTRIBUTING.md (the one file map). Nothing here imports the API
or the worker.
"""
