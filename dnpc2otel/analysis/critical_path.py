"""The critical path: the chain of dependencies that set the run's length.

It ends at the task that finished last and walks back, at each task, to the dependency (a `depends_on`
link) that finished last — the one the task was really waiting for. Each step keeps its task's breakdown,
and `after_dependency_s` says how long the task took to start after that dependency was done.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .breakdown import TASK_PARTS
from .vocabulary import DEPENDS_ON, member

A = ANALYSIS

CRITICAL_PATH = View("critical_path", (
    ("trace_id", "VARCHAR", "the run"),
    ("step", "INTEGER", "0: the first task of the chain"),
    ("span_id", "VARCHAR", "the task"),
    ("task_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("depends_on_task_id", "BIGINT", "the previous step: the dependency that finished last"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", ""),
    ("contribution_s", "DOUBLE", "end − the previous step's end (the first step: its duration)"),
    ("after_dependency_s", "DOUBLE", "the previous step's end → this task's first try"),
    *((f"{p}_s", "DOUBLE", "as in task_breakdown") for p in TASK_PARTS),
    ("unattributed_s", "DOUBLE", ""),
), sql=f"""
WITH RECURSIVE tasks AS (
    SELECT trace_id, span_id, task_id, end_time_unix_nano AS t1 FROM {A}.contexts WHERE role = 'task'
), pred AS (  -- each task's dependency that finished last
    SELECT l.trace_id, l.span_id AS task, d.span_id AS dep FROM span_links l
    JOIN tasks d ON d.trace_id = l.linked_trace_id AND d.span_id = l.linked_span_id
    WHERE {member('dnpc.relation', 'l')} = '{DEPENDS_ON}'
    QUALIFY row_number() OVER (PARTITION BY l.trace_id, l.span_id ORDER BY d.t1 DESC, d.task_id DESC) = 1
), last AS (
    SELECT trace_id, span_id FROM tasks
    QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY t1 DESC, task_id DESC) = 1
), walk(trace_id, span_id, back) AS (
    SELECT trace_id, span_id, 0 FROM last
    UNION ALL
    SELECT w.trace_id, p.dep, w.back + 1 FROM walk w JOIN pred p ON p.trace_id = w.trace_id AND p.task = w.span_id
    WHERE w.back < 100000
), path AS (
    SELECT w.trace_id, max(w.back) OVER (PARTITION BY w.trace_id) - w.back AS step, w.span_id, p.dep
    FROM walk w LEFT JOIN pred p ON p.trace_id = w.trace_id AND p.task = w.span_id
), first_try AS (
    SELECT trace_id, task_span_id, min(start_time_unix_nano) AS t FROM {A}.try_breakdown GROUP BY ALL
)
SELECT p.trace_id, CAST(p.step AS INTEGER) AS step, p.span_id, b.task_id, b.app, d.task_id AS depends_on_task_id,
       b.start_time_unix_nano, b.end_time_unix_nano, b.duration_s,
       (b.end_time_unix_nano - coalesce(greatest(d.end_time_unix_nano, b.start_time_unix_nano), b.start_time_unix_nano))
           / 1e9 AS contribution_s,
       (f.t - d.end_time_unix_nano) / 1e9 AS after_dependency_s,
       {", ".join(f"b.{p}_s" for p in TASK_PARTS)}, b.unattributed_s
FROM path p JOIN {A}.task_breakdown b ON b.trace_id = p.trace_id AND b.span_id = p.span_id
LEFT JOIN {A}.task_breakdown d ON d.trace_id = p.trace_id AND d.span_id = p.dep
LEFT JOIN first_try f ON f.trace_id = p.trace_id AND f.task_span_id = p.span_id
""")

VIEWS = (CRITICAL_PATH,)
