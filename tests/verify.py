"""Checks of a replayed DuckDB against the run's own monitoring.db (the issue's 'done when' list)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

NS = 1_000_000_000


def db_rows(monitoring_db: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(f"file:{monitoring_db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def local_to_ns(text: str, offset_s: int) -> int:
    dt = datetime.fromisoformat(text)
    epoch = datetime(1970, 1, 1)
    return (dt - epoch) // timedelta(microseconds=1) * 1000 - offset_s * NS


def spans_by(con: duckdb.DuckDBPyConnection, ctype: str) -> dict[tuple, dict]:
    cols = ["trace_id", "span_id", "parent_span_id", "name", "start", "end", "status_code", "status_message",
            "task_id", "try_id", "run_id"]
    rows = con.execute(
        """SELECT trace_id, span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, status_code,
                  status_message, CAST(json_extract(attributes, '$."parsl.task.id"') AS BIGINT),
                  CAST(json_extract(attributes, '$."parsl.try.id"') AS BIGINT),
                  json_extract_string(attributes, '$."parsl.run_id"')
           FROM spans WHERE context_type = ?""",
        [ctype],
    ).fetchall()
    out = {}
    for r in rows:
        d = dict(zip(cols, r, strict=True))
        key = (d["run_id"], d["task_id"]) if ctype == "task" else (d["run_id"], d["task_id"], d["try_id"])
        out[key] = d
    return out


def check_replay_against_monitoring(duck: Path, monitoring_db: Path, tolerance_ns: int = 1_000_000) -> dict:
    """Assert the issue's criteria; returns counts for further checks."""
    con = duckdb.connect(str(duck), read_only=True)
    try:
        runs = {r[0]: r[1] for r in con.execute("SELECT run_id, utc_offset_seconds FROM runs").fetchall()}
        tasks = spans_by(con, "task")
        tries = spans_by(con, "try")
        workflows = {r[0]: r[1] for r in con.execute(
            """SELECT json_extract_string(attributes, '$."parsl.run_id"'), span_id FROM spans
               WHERE context_type = 'workflow'""").fetchall()}
        links = {(r[0], r[1]) for r in con.execute(
            """SELECT span_id, linked_span_id FROM span_links
               WHERE json_extract_string(attributes, '$."dnpc.relation"') = 'depends_on'""").fetchall()}
    finally:
        con.close()

    db_tasks = db_rows(monitoring_db, "SELECT run_id, task_id, task_depends FROM task")
    db_tries = db_rows(
        monitoring_db,
        """SELECT run_id, task_id, try_id, task_try_time_launched, task_try_time_returned, task_fail_history
           FROM try""",
    )
    db_tasks = [t for t in db_tasks if t[0] in runs]
    db_tries = [t for t in db_tries if t[0] in runs]
    assert db_tasks, "the database has no task of the replayed runs"

    # one task span per task row, one try span per try row
    assert {(r, t) for r, t, _ in db_tasks} == set(tasks)
    assert {(r, t, y) for r, t, y, *_ in db_tries} == set(tries)

    for (run, task), span in tasks.items():
        assert span["parent_span_id"] == workflows[run], f"task {task} is not a child of its workflow"
    for (run, task, _try), span in tries.items():
        assert span["parent_span_id"] == tasks[(run, task)]["span_id"], f"try {task}.{_try} not under its task"

    # try start/end within 1 ms of the database, after the inferred UTC offset
    timed = 0
    for run, task, try_id, launched, returned, fail_history in db_tries:
        span = tries[(run, task, try_id)]
        if launched:
            assert abs(span["start"] - local_to_ns(launched, runs[run])) <= tolerance_ns, (task, try_id, "start")
            timed += 1
        if returned:
            assert abs(span["end"] - local_to_ns(returned, runs[run])) <= tolerance_ns, (task, try_id, "end")
        if fail_history:
            assert span["status_code"] == "ERROR", f"failed try {task}.{try_id} not marked"
        else:
            assert span["status_code"] != "ERROR", f"try {task}.{try_id} wrongly marked failed"

    # dependency links from the dependent task to each dependency
    n_deps = 0
    for run, task, depends in db_tasks:
        for dep in filter(None, (depends or "").split(",")):
            assert (tasks[(run, task)]["span_id"], tasks[(run, int(dep))]["span_id"]) in links, (task, dep)
            n_deps += 1

    # tasks that failed carry status ERROR
    failed = db_rows(
        monitoring_db,
        "SELECT DISTINCT run_id, task_id FROM status WHERE task_status_name IN ('failed', 'dep_fail')",
    )
    for run, task in failed:
        if run in runs:
            assert tasks[(run, task)]["status_code"] == "ERROR", f"failed task {task} not marked"
    return {"tasks": len(tasks), "tries": len(tries), "timed_tries": timed, "dependencies": n_deps,
            "failed_tasks": len(failed)}
