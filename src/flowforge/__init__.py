"""FlowForge: a small task service (REST API, workers, PostgreSQL as store and queue)."""

__version__ = "0.1.0"
