"""Time in each part of a task's life, per app: how many tasks, the total (cumulative) time, percentiles."""

from __future__ import annotations

from ..tables import ANALYSIS, View

A = ANALYSIS

STATE_TIMES = View("state_times", (
    ("trace_id", "VARCHAR", "the run"),
    ("app", "VARCHAR", ""),
    ("part", "VARCHAR", "a part of task_phases (pending, queued, execution, …, unattributed)"),
    ("tasks", "BIGINT", "tasks in which the part was observed"),
    ("total_s", "DOUBLE", "cumulative time of the app's tasks in it"),
    ("share", "DOUBLE", "of the app's total task time (0..1)"),
    ("mean_s", "DOUBLE", ""),
    ("p50_s", "DOUBLE", ""),
    ("p90_s", "DOUBLE", ""),
    ("p99_s", "DOUBLE", ""),
    ("max_s", "DOUBLE", ""),
), sql=f"""
WITH per_task AS (
    SELECT trace_id, task_span_id, app, part, min(step) AS step, sum(duration_s) AS s
    FROM {A}.task_phases GROUP BY ALL
)
SELECT trace_id, app, part, count(*) AS tasks, sum(s) AS total_s,
       sum(s) / nullif(sum(sum(s)) OVER (PARTITION BY trace_id, app), 0) AS share,
       avg(s) AS mean_s, quantile_cont(s, 0.5) AS p50_s, quantile_cont(s, 0.9) AS p90_s,
       quantile_cont(s, 0.99) AS p99_s, max(s) AS max_s
FROM per_task GROUP BY trace_id, app, part
""")

VIEWS = (STATE_TIMES,)
