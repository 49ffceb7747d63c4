"""FlowForge: a small task service (REST API, workers, PostgreSQL as store and queue)."""

from importlib.metadata import PackageNotFoundError, version

try:  # pyproject.toml's version, as installed: one place to change it
    __version__ = version("flowforge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

del PackageNotFoundError, version
