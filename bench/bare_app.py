"""The reference point of bench_api.py: bare Bottle + psycopg handlers for GET by id, POST
and the first page of the list.

No envelope, no request ID, no logging, no validation: what the production features are
measured against. Served by gunicorn exactly like FlowForge (`gunicorn bare_app:app`).
"""

import os

import bottle
import orjson
import psycopg
from psycopg.types.json import Jsonb

from flowforge.stores.tasks_sql import COLUMNS, GET_TASK

# What a bare app writes and reads: the insert returns the row, the list is one page newest
# first with no total (a bare app counts nothing).
INSERT = f"INSERT INTO tasks (title, description, payload) VALUES (%s, %s, %s) RETURNING {COLUMNS}"
LIST = f"SELECT {COLUMNS} FROM tasks ORDER BY created_at DESC, id DESC LIMIT %s"

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


@app.post("/v1/tasks")
def create_task() -> bytes:
    body = orjson.loads(bottle.request.body.read())
    cur = _connection().cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute(
        INSERT, (body["title"], body.get("description"), Jsonb(body.get("payload", {})))
    ).fetchone()
    bottle.response.status = 201
    bottle.response.content_type = "application/json"
    return orjson.dumps(row)


@app.get("/v1/tasks")
def list_tasks() -> bytes:
    limit = int(bottle.request.query.get("limit", 20))
    cur = _connection().cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(LIST, (limit,)).fetchall()
    bottle.response.content_type = "application/json"
    return orjson.dumps({"data": rows})
