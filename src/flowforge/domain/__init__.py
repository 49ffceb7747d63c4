"""FlowForge's rules, owned by neither the API nor the worker: the field tables, the state
machine, the Task row, validation and a schedule's rules.

Its modules are listed in CONTRIBUTING.md (the one file map). Nothing here imports the
API, the worker, the stores or a database driver.
"""
