"""FlowForge's rules, owned by neither the API nor the worker.

    fields.py      the field tables of a task and of a schedule (types, defaults, limits,
                   the queue-name rule): validation, defaults, schema.py's CHECK values
                   and (by a test) openapi.yaml read them
    states.py      the task state machine as data: who moves a task from which status
                   to which; docs/state-machine.md is made from it
    tasks.py       the Task row (the dataclass the stores return)
    validation.py  what a request may contain, per field (ValidationError)
    schedules.py   a schedule's rules: cron, time zone, name, body, the Schedule row

Nothing here imports the API, the worker or a database driver.
"""
