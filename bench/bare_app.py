"""The reference point of bench_api.py: a bare Bottle + psycopg handler for GET by id.

No envelope, no request ID, no logging, no validation: what the production features are
measured against. Served by gunicorn exactly like FlowForge (`gunicorn bare_app:app`).
"""

import os

import bottle
import orjson
import psycopg

from flowforge.queries import GET_TASK

app = bottle.Bottle()
_conn: psycopg.Connection | None = None


def _connection() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return _conn


@app.get("/v1/tasks/<task_id:int>")
def get_task(task_id: int) -> bytes:
    cur = _connection().cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute(GET_TASK, {"id": task_id}).fetchone()
    bottle.response.content_type = "application/json"
    return orjson.dumps(row)
