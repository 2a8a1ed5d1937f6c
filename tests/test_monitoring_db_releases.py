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


def test_a_database_before_the_try_table_gives_one_try_per_task(tmp_path):
    """Parsl 0.9/1.0 schema (no try table; the task row holds executor, host and running time), made from
    the real 1.1 database by moving each task's first try into its task row, as those releases stored it."""
    run_dir = tmp_path / "runinfo"
    shutil.copytree(EEPS_DB, run_dir)
    db = sqlite3.connect(run_dir / "monitoring.db")
    db.executescript("""
        CREATE TABLE task_old AS
        SELECT t.task_id, t.run_id, t.task_depends, y.task_executor, t.task_func_name,
               t.task_time_invoked AS task_time_submitted, y.task_try_time_running AS task_time_running,
               t.task_time_returned, t.task_memoize, t.task_hashsum, t.task_inputs, t.task_outputs, t.task_stdin,
               t.task_stdout, t.task_stderr, y.hostname, t.task_fail_count, y.task_fail_history
        FROM task t JOIN try y ON y.run_id = t.run_id AND y.task_id = t.task_id AND y.try_id = 0;
        DROP TABLE task; ALTER TABLE task_old RENAME TO task;
        DROP TABLE try; DROP TABLE block;
        ALTER TABLE status DROP COLUMN try_id;
    """)
    db.commit()
    returned = dict(((r, t), ret) for r, t, ret in db.execute("SELECT run_id, task_id, task_time_returned FROM task"))
    db.close()
    out = tmp_path / "v10.duckdb"
    summary = replay(run_dir, out)
    assert not summary.warnings, summary.warnings
    assert task_spans(out) == db_tasks(run_dir / "monitoring.db")
    with duckdb.connect(str(out), read_only=True) as c:
        tries = c.execute("""SELECT attributes->>'$."parsl.run_id"', CAST(attributes->>'$."parsl.task.id"' AS INT),
                                    attributes->>'$."dnpc.inferred"', end_time_unix_nano
                             FROM spans WHERE context_type = 'try'""").fetchall()
    assert len(tries) == len(returned) == 224
    assert all(inferred and inferred.startswith("try id: one try per task") for _, _, inferred, _ in tries)
    assert sum(returned[(r, t)] is not None for r, t, _, _ in tries) > 200
