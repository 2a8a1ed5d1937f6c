"""monitoring.db of every release: each schema is read by the columns it has. The database is a real one
(Parsl 1.1, kommav/EEPS); older schemas are made from it by dropping what those releases lacked."""

from __future__ import annotations

import shutil
import sqlite3

import duckdb
import pytest
from conftest import REPO

from dnpc2otel import replay

EEPS_DB = REPO / "tests" / "data" / "realworld" / "cctools-and-db" / "eeps-monitoring-db-2021" / "runinfo"


def db_tasks(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(((r, t), app) for r, t, app in con.execute("SELECT run_id, task_id, task_func_name FROM task"))
    finally:
        con.close()


def task_spans(out):
    with duckdb.connect(str(out), read_only=True) as c:
        rows = c.execute("""SELECT attributes->>'$."parsl.run_id"', CAST(attributes->>'$."parsl.task.id"' AS INT),
                                   name FROM spans WHERE context_type = 'task'""").fetchall()
    return {(r, t): name for r, t, name in rows}


@pytest.mark.parametrize("drop", [
    [],                                                   # Parsl 1.1 as it was
    ["ALTER TABLE task DROP COLUMN task_fail_cost"],      # Parsl 1.1.0: no task_fail_cost
    ["ALTER TABLE try DROP COLUMN task_joins", "ALTER TABLE resource DROP COLUMN psutil_process_cpu_percent"],
    ["DROP TABLE resource", "DROP TABLE node"],           # a release before those tables
])
def test_every_task_of_an_old_database_is_named_by_its_app(drop, tmp_path):
    run_dir = tmp_path / "runinfo"
    shutil.copytree(EEPS_DB, run_dir)
    db = sqlite3.connect(run_dir / "monitoring.db")
    for stmt in drop:
        db.execute(stmt)
    db.commit()
    db.close()
    summary = replay(run_dir, tmp_path / "old.duckdb")
    assert not summary.warnings, summary.warnings
    want = db_tasks(run_dir / "monitoring.db")
    assert len(want) == 224
    assert task_spans(tmp_path / "old.duckdb") == want
