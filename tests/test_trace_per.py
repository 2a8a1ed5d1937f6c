"""`--trace-per run|task|auto` (export/traces.py): the traces spans are sent in, on a real bundled run.

Task mode: one trace per task with everything under it, the rest in a small run trace; no parent across
traces; every link (moved or not) names a span that is exported in the trace it names; nothing lost.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_runs

from dnpc2otel import replay
from dnpc2otel.export import traces

RUN = Path(__file__).parent / "data" / "corpus" / "htex-2026" / "runinfo"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace_per") / "htex.duckdb"
    replay(RUN, path)
    return path


def views(db: Path, mode: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(db), read_only=True)  # the exporter's connection is read-only too
    traces.create_views(con, mode)
    return con


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_run_mode_is_the_database(db):
    con = views(db, "run")
    assert rows(con, "SELECT * EXCLUDE (run_trace_id) FROM export_spans ORDER BY ALL") == rows(
        con, "SELECT * FROM spans ORDER BY ALL")
    assert rows(con, "SELECT * EXCLUDE (run_trace_id) FROM export_links ORDER BY ALL") == rows(
        con, "SELECT * FROM span_links ORDER BY ALL")
    assert rows(con, "SELECT * EXCLUDE (run_trace_id) FROM export_events ORDER BY ALL") == rows(
        con, "SELECT * FROM span_events ORDER BY ALL")


def test_task_mode_one_trace_per_task(db):
    con = views(db, "task")
    (run_trace,), = rows(con, "SELECT trace_id FROM runs")
    tasks = rows(con, "SELECT span_id, attributes->>'dnpc.context_id' FROM spans WHERE context_type = 'task'")
    assert len(tasks) == 31
    # same spans, same events, each once; one trace per task plus the run's
    assert rows(con, "SELECT span_id FROM export_spans ORDER BY 1") == rows(con, "SELECT span_id FROM spans ORDER BY 1")
    assert rows(con, "SELECT count(*) FROM export_events") == rows(con, "SELECT count(*) FROM span_events")
    assert rows(con, "SELECT count(DISTINCT trace_id) FROM export_spans") == [(len(tasks) + 1,)]
    # deterministic ids: each task's trace is the hash of its run's trace and its id; it is the trace's only root
    for span_id, task_id in tasks:
        want = hashlib.sha256(f"dnpc2otel/trace/{run_trace}/task/{task_id}".encode()).hexdigest()[:32]
        assert rows(con, f"SELECT trace_id, parent_span_id FROM export_spans WHERE span_id = '{span_id}'") == [
            (want, None)]
        assert rows(con, f"SELECT count(*) FROM export_spans WHERE trace_id = '{want}' AND parent_span_id IS NULL"
                    ) == [(1,)]
    # a task trace holds its tries, executor tasks and worker executions; the run trace keeps the rest
    kinds = dict(rows(con, f"""SELECT trace_id = '{run_trace}', list(DISTINCT context_type ORDER BY context_type)
                             FROM export_spans GROUP BY 1"""))
    assert kinds[False] == ["executor_task", "task", "try", "worker_execution"]
    assert kinds[True] == ["block", "database_manager", "executor", "manager", "monitoring_router", "worker",
                           "workflow"]
    # no parent in another trace
    assert rows(con, """SELECT count(*) FROM export_spans s WHERE parent_span_id IS NOT NULL AND NOT EXISTS
                        (SELECT 1 FROM export_spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)
                     """) == [(0,)]
    # every link's target is a (trace, span) pair that is exported, and every linking span too
    pairs = set(rows(con, "SELECT trace_id, span_id FROM export_spans"))
    for t, s, lt, ls in rows(con, "SELECT trace_id, span_id, linked_trace_id, linked_span_id FROM export_links"):
        assert (t, s) in pairs and (lt, ls) in pairs
    # the stored links all survive (span ids and attributes unchanged); each task gains one to its run's root
    stored = rows(con, "SELECT span_id, linked_span_id, attributes FROM span_links ORDER BY ALL")
    got = rows(con, "SELECT span_id, linked_span_id, attributes FROM export_links ORDER BY ALL")
    assert set(stored) <= set(got) and len(got) == len(stored) + len(tasks)
    (root,), = rows(con, "SELECT span_id FROM spans WHERE parent_span_id IS NULL")
    assert rows(con, f"""SELECT count(*) FROM export_links l JOIN spans s USING (span_id)
                        WHERE s.context_type = 'task' AND l.attributes->>'dnpc.relation' = 'child_of_run'
                          AND l.linked_span_id = '{root}' AND l.linked_trace_id = '{run_trace}'""") == [(len(tasks),)]
    # dependencies between tasks now cross traces: they name the dependency's task trace
    assert rows(con, """SELECT count(*) FROM export_links WHERE attributes->>'dnpc.relation' = 'depends_on'
                        AND trace_id <> linked_trace_id""") == [(22,)]


@pytest.mark.parametrize("run", corpus_runs(), ids=[r.parent.name for r in corpus_runs()])
def test_task_mode_keeps_every_trace_whole(run, tmp_path):
    """Every bundled run (join apps, memo hits, no parsl.log, WorkQueue, killed managers …): in task mode
    each trace has one root, no parent is in another trace, every link names an exported (trace, span)."""
    path = tmp_path / "run.duckdb"
    replay(run, path)
    con = views(path, "task")
    assert rows(con, "SELECT count(*) FROM export_spans") == rows(con, "SELECT count(*) FROM spans")
    assert rows(con, "SELECT count(*) FROM export_events") == rows(con, "SELECT count(*) FROM span_events")
    tasks = rows(con, "SELECT count(*) FROM spans WHERE context_type = 'task'")[0][0]
    assert rows(con, "SELECT count(DISTINCT trace_id) FROM export_spans") == [(tasks + 1,)]
    assert rows(con, """SELECT trace_id FROM export_spans GROUP BY 1
                        HAVING count(*) FILTER (WHERE parent_span_id IS NULL) <> 1""") == []
    assert rows(con, """SELECT count(*) FROM export_spans s WHERE parent_span_id IS NOT NULL AND NOT EXISTS
                        (SELECT 1 FROM export_spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)
                     """) == [(0,)]
    assert rows(con, """SELECT count(*) FROM export_links l WHERE NOT EXISTS (SELECT 1 FROM export_spans p
                        WHERE p.trace_id = l.linked_trace_id AND p.span_id = l.linked_span_id)""") == [(0,)]


def test_auto_picks_by_span_count(db, monkeypatch):
    assert rows(views(db, "auto"), "SELECT count(DISTINCT trace_id) FROM export_spans") == [(1,)]
    monkeypatch.setattr(traces, "AUTO_TASK_SPANS", 100)  # this run has 136 spans
    assert rows(views(db, "auto"), "SELECT count(DISTINCT trace_id) FROM export_spans") == [(32,)]
    monkeypatch.setattr(traces, "AUTO_TASK_SPANS", 136)
    assert rows(views(db, "auto"), "SELECT count(DISTINCT trace_id) FROM export_spans") == [(1,)]


def test_unknown_mode_is_refused(db):
    with pytest.raises(ValueError, match="one of run, task, auto"):
        views(db, "span")


@pytest.mark.slow
def test_task_traces_in_jaeger(jaeger, db):
    """`dnpc2otel export --trace-per task` into a real Jaeger: a task's trace with its try, executor task and
    worker execution, linked to the run's root span in the run's own trace."""
    jaeger.restart()
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "export", str(db), "--trace-per", "task",
                           "--otlp-endpoint", jaeger.otlp_http_endpoint, "--restart", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    con = views(db, "task")
    (run_trace,), = rows(con, "SELECT trace_id FROM runs")
    (root,), = rows(con, "SELECT span_id FROM spans WHERE parent_span_id IS NULL")
    for trace_id, n in rows(con, "SELECT trace_id, count(*) FROM export_spans GROUP BY 1"):
        got = jaeger.wait_for_spans(trace_id, n)
        assert len(got) == n
    task_trace, task_span = rows(con, """SELECT trace_id, span_id FROM export_spans
                                         WHERE context_type = 'task' ORDER BY start_time_unix_nano LIMIT 1""")[0]
    spans = jaeger.spans_v3(task_trace)
    assert sorted({s["attributes"]["dnpc.context_type"] for s in spans}) == [
        "executor_task", "task", "try", "worker_execution"]
    by_id = {s["span_id"]: s for s in spans}
    assert by_id[task_span]["parent_span_id"] == ""
    assert all(s["parent_span_id"] in by_id for s in spans if s["span_id"] != task_span)
    (link,) = [lk for lk in by_id[task_span]["links"] if lk["attributes"].get("dnpc.relation") == "child_of_run"]
    assert (link["trace_id"], link["span_id"]) == (run_trace, root)
    # the worker execution's second parent (its worker) is a link into the run trace, where the worker is
    execution = next(s for s in spans if s["attributes"]["dnpc.context_type"] == "worker_execution")
    worker_links = [lk for lk in execution["links"] if lk["attributes"].get("dnpc.relation") == "also_child_of"]
    assert worker_links and all(lk["trace_id"] == run_trace for lk in worker_links)
    run_spans = {s["span_id"]: s for s in jaeger.spans_v3(run_trace)}
    assert all(lk["span_id"] in run_spans for lk in worker_links)
