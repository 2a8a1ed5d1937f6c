"""What failed, what it cost, and what it took down with it.

A failed try is one whose status is ERROR; its cost is its whole duration (launch to result), of which
`execution_s` ran on a worker. A task that never ran because a dependency failed is traced back through
its `depends_on` links to the failures that were not themselves dependency failures: the cascade's roots.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .vocabulary import DEPENDENCY_FAILURE_STATE, DEPENDS_ON, member

A = ANALYSIS

FAILED_TRIES = View("failed_tries", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the try"),
    ("task_id", "BIGINT", ""),
    ("try_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("executor", "VARCHAR", ""),
    ("final_state", "VARCHAR", "fail_retryable, failed, dep_fail, …"),
    ("exception", "VARCHAR", "its type"),
    ("status_message", "VARCHAR", "as the sources give it"),
    ("retried", "BOOLEAN", "a later try of the task followed"),
    ("duration_s", "DOUBLE", "its cost: the try's whole duration"),
    ("execution_s", "DOUBLE", "of which it ran on a worker"),
    ("host", "VARCHAR", ""),
    ("node", "VARCHAR", ""),
    ("block_id", "VARCHAR", ""),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
), sql=f"""
SELECT b.trace_id, b.span_id, b.task_id, b.try_id, b.app, b.executor, b.final_state, b.exception, s.status_message,
       EXISTS (SELECT 1 FROM {A}.try_breakdown n WHERE n.trace_id = b.trace_id AND n.task_span_id = b.task_span_id
               AND n.start_time_unix_nano > b.start_time_unix_nano) AS retried,
       b.duration_s, b.execution_s, b.host, b.node, b.block_id, b.start_time_unix_nano, b.end_time_unix_nano
FROM {A}.try_breakdown b JOIN spans s ON s.trace_id = b.trace_id AND s.span_id = b.span_id
WHERE b.status_code = 'ERROR'
""")

FAILURE_COST = View("failure_cost", (
    ("trace_id", "VARCHAR", ""),
    ("app", "VARCHAR", ""),
    ("exception", "VARCHAR", ""),
    ("host", "VARCHAR", ""),
    ("node", "VARCHAR", ""),
    ("failed_tries", "BIGINT", ""),
    ("retried", "BIGINT", "of which a retry followed"),
    ("tasks", "BIGINT", "distinct tasks"),
    ("failed_s", "DOUBLE", "time spent in those tries"),
    ("execution_s", "DOUBLE", "of which on workers"),
), sql=f"""
SELECT trace_id, app, exception, host, node, count(*) AS failed_tries, count(*) FILTER (WHERE retried) AS retried,
       count(DISTINCT task_id) AS tasks, sum(duration_s) AS failed_s, sum(execution_s) AS execution_s
FROM {A}.failed_tries GROUP BY ALL
""")

DEPENDENCY_FAILURES = View("dependency_failures", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "a task that failed because a dependency did"),
    ("task_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("root_span_id", "VARCHAR", "a failure upstream of it that was not a dependency failure"),
    ("root_task_id", "BIGINT", ""),
    ("root_app", "VARCHAR", ""),
    ("root_exception", "VARCHAR", "the exception of the root's last try"),
    ("depth", "INTEGER", "dependency links from the task to the root"),
), sql=f"""
WITH RECURSIVE failed AS (
    SELECT trace_id, span_id, task_id, coalesce(app, name) AS app, state FROM {A}.contexts
    WHERE role = 'task' AND status_code = 'ERROR'
), deps AS (
    SELECT l.trace_id, l.span_id AS task, l.linked_span_id AS dep FROM span_links l
    JOIN failed a ON a.trace_id = l.trace_id AND a.span_id = l.span_id
    JOIN failed b ON b.trace_id = l.linked_trace_id AND b.span_id = l.linked_span_id
    WHERE {member('dnpc.relation', 'l')} = '{DEPENDS_ON}'
), walk(trace_id, task, cause, depth) AS (
    SELECT d.trace_id, d.task, d.dep, 1 FROM deps d
    JOIN failed f ON f.trace_id = d.trace_id AND f.span_id = d.task WHERE f.state = '{DEPENDENCY_FAILURE_STATE}'
    UNION  -- not ALL: paths through a diamond of failures merge instead of multiplying
    SELECT w.trace_id, w.task, d.dep, w.depth + 1 FROM walk w
    JOIN failed c ON c.trace_id = w.trace_id AND c.span_id = w.cause AND c.state = '{DEPENDENCY_FAILURE_STATE}'
    JOIN deps d ON d.trace_id = w.trace_id AND d.task = w.cause
    WHERE w.depth < 1000
), last_try AS (
    SELECT trace_id, task_span_id, arg_max(exception, start_time_unix_nano) AS exception
    FROM {A}.try_breakdown GROUP BY ALL
)
SELECT w.trace_id, w.task AS span_id, t.task_id, t.app, w.cause AS root_span_id, r.task_id AS root_task_id,
       r.app AS root_app, x.exception AS root_exception, min(w.depth) AS depth
FROM walk w
JOIN failed t ON t.trace_id = w.trace_id AND t.span_id = w.task
JOIN failed r ON r.trace_id = w.trace_id AND r.span_id = w.cause
LEFT JOIN last_try x ON x.trace_id = w.trace_id AND x.task_span_id = w.cause
WHERE r.state IS DISTINCT FROM '{DEPENDENCY_FAILURE_STATE}'
GROUP BY ALL
""")

VIEWS = (FAILED_TRIES, FAILURE_COST, DEPENDENCY_FAILURES)
