"""Which trace each span is exported in: the views every OTLP exporter reads.

The DuckDB file keeps one trace per run (tables `spans`, `span_events`, `span_links`), so analysis and SQL
never depend on how the spans are sent. Exporters do not read those tables directly but the temp views this
module creates on their (read-only) connection: `export_spans`, `export_events` and `export_links`, with the
columns of the tables plus `run_trace_id` (the trace of the run in the DuckDB file: what the `runs` table,
the processes' resources and `--trace-id` selections are keyed by). The views place each span in the trace
it is sent in:

- `run`: the database as it is, one trace per run.
- `task`: a million spans in one trace is unusable in Jaeger's UI, so each task (contexts of type
  `TASK_CONTEXT`) roots a trace of its own, with every span whose primary-parent chain leads to it (its
  tries, executor tasks, worker executions, stages, …); trace id = sha256("dnpc2otel/trace/<run trace
  id>/task/<task id>")[:32], deterministic. The task span loses its parent and gets a link to it instead
  (`dnpc.relation` = "child_of_run" when that parent is the run's root, else "child_of"); the run-level trace
  keeps the rest (workflow, executors, blocks, managers, workers: small). Span ids do not change, and every
  link (dependencies, second parents, joins, blocks, workers) names its target's new trace.
- `auto` (the default): `task` for the runs with more than `AUTO_TASK_SPANS` spans, `run` for the others.
  10,000 because Jaeger's UI renders a trace as one page of rows: a few thousand spans load in a second or
  two, tens of thousands make it crawl and 10^5 make it unusable; every run of the bundled corpus and of
  the tests is far below it, so for them `auto` is `run`.

The task type is "task" (`TASK_CONTEXT`): no `[system]` key of the converter definitions declares the unit
of work, and an export reads the DuckDB file only, without the definitions.
"""

from __future__ import annotations

import duckdb

from ..sources.templates import quote_literal

MODES = ("run", "task", "auto")
DEFAULT_MODE = "auto"
AUTO_TASK_SPANS = 10_000
TASK_CONTEXT = "task"


MAX_DEPTH = 64  # levels below a task (try › executor task › worker execution › stages …), far more than any run has


def create_views(con: duckdb.DuckDBPyConnection, mode: str = DEFAULT_MODE, task_context: str = TASK_CONTEXT) -> None:
    """Create temp views export_spans, export_events, export_links on `con` for `mode`."""
    if mode not in MODES:
        raise ValueError(f"trace mode {mode!r}: one of {', '.join(MODES)}")
    chosen = {"run": "WHERE false", "task": "", "auto": f"WHERE spans > {AUTO_TASK_SPANS}"}[mode]
    # span → the task trace it moves to (only spans that move): the tasks, then down their parent chains, a
    # level a statement (a recursive CTE holds all its rows in memory: it ran out of 384 MB at 10^6 tasks)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE export_moved AS
        SELECT 0 AS level, s.trace_id, s.span_id,
               substr(sha256('dnpc2otel/trace/' || s.trace_id || '/task/'
                             || json_extract_string(s.attributes, '$."dnpc.context_id"')), 1, 32) AS task_trace
        FROM spans s
        WHERE s.context_type = ? AND s.parent_span_id IS NOT NULL
          AND s.trace_id IN (SELECT trace_id FROM runs {chosen})
        """,
        [task_context],
    )
    for level in range(1, MAX_DEPTH + 1):  # spans form a tree (reconcile/nesting.py): each is reached once
        row = con.execute(
            """
            INSERT INTO export_moved
            SELECT ?, c.trace_id, c.span_id, m.task_trace
            FROM spans c JOIN export_moved m ON c.trace_id = m.trace_id AND c.parent_span_id = m.span_id
            WHERE m.level = ? AND c.context_type <> ?
            """,
            [level, level - 1, task_context],
        ).fetchone()
        if not row or not row[0]:
            break
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW export_spans AS
        SELECT coalesce(m.task_trace, s.trace_id) AS trace_id, s.span_id,
               CASE WHEN m.task_trace IS NOT NULL AND s.context_type = {quote_literal(task_context)} THEN NULL
                    ELSE s.parent_span_id END AS parent_span_id,
               s.* EXCLUDE (trace_id, span_id, parent_span_id), s.trace_id AS run_trace_id
        FROM spans s LEFT JOIN export_moved m USING (trace_id, span_id)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP VIEW export_events AS
        SELECT coalesce(m.task_trace, e.trace_id) AS trace_id, e.* EXCLUDE (trace_id), e.trace_id AS run_trace_id
        FROM span_events e LEFT JOIN export_moved m USING (trace_id, span_id)
        """
    )
    # a task's former parent becomes a link (follows_from: Jaeger takes a CHILD_OF reference for the parent)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW export_links AS
        SELECT coalesce(a.task_trace, l.trace_id) AS trace_id, l.span_id,
               coalesce(b.task_trace, l.linked_trace_id) AS linked_trace_id, l.linked_span_id, l.attributes,
               l.trace_id AS run_trace_id
        FROM span_links l
        LEFT JOIN export_moved a ON a.trace_id = l.trace_id AND a.span_id = l.span_id
        LEFT JOIN export_moved b ON b.trace_id = l.linked_trace_id AND b.span_id = l.linked_span_id
        UNION ALL
        SELECT m.task_trace, s.span_id, coalesce(pm.task_trace, p.trace_id), p.span_id,
               json_object('dnpc.relation', CASE WHEN p.parent_span_id IS NULL THEN 'child_of_run' ELSE 'child_of' END,
                           'dnpc.linked_context', p.context_type || ':'
                             || json_extract_string(p.attributes, '$."dnpc.context_id"'),
                           'opentracing.ref_type', 'follows_from'),
               s.trace_id
        FROM export_moved m
        JOIN spans s ON s.trace_id = m.trace_id AND s.span_id = m.span_id
                    AND s.context_type = {quote_literal(task_context)}
        JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
        LEFT JOIN export_moved pm ON pm.trace_id = p.trace_id AND pm.span_id = p.span_id
        """
    )

