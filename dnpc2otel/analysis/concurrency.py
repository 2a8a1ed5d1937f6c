"""How many tasks were in each part of their life (pending, queued, execution, …) over time.

Computed as a step function (+1 when a task enters a part, -1 when it leaves), then integrated over each
bucket: `mean_tasks` is the time-weighted mean over the bucket, `peak_tasks` the most at any instant in
it, so neither depends on how coarse the buckets are.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View

A = ANALYSIS

CONCURRENCY = View("concurrency", (
    ("trace_id", "VARCHAR", "the run"),
    ("bucket_unix_nano", "BIGINT", "start of the bucket (aligned to multiples of bucket_s since the epoch)"),
    ("t_s", "DOUBLE", "that start, in seconds since the run's start"),
    ("part", "VARCHAR", "a part of task_timeline (failed tries count in their own parts)"),
    ("mean_tasks", "DOUBLE", "tasks in that part, time-weighted over the bucket"),
    ("peak_tasks", "BIGINT", "the most at any instant of the bucket"),
), params="bucket_s := 1.0", sql=f"""
WITH b AS (SELECT CAST(round(bucket_s * 1e9) AS BIGINT) AS ns),
ev AS (
    SELECT trace_id, part, start_time_unix_nano AS t, 1 AS d FROM {A}.task_timeline
    WHERE end_time_unix_nano > start_time_unix_nano
    UNION ALL
    SELECT trace_id, part, end_time_unix_nano, -1 FROM {A}.task_timeline WHERE end_time_unix_nano > start_time_unix_nano
), steps AS (
    SELECT trace_id, part, t, sum(d) AS d FROM ev GROUP BY ALL
), levels AS (
    SELECT trace_id, part, t AS t0, lead(t) OVER w AS t1, sum(d) OVER (w ROWS UNBOUNDED PRECEDING) AS level
    FROM steps WINDOW w AS (PARTITION BY trace_id, part ORDER BY t)
), cut AS (
    SELECT l.*, b.ns, unnest(range(l.t0 // b.ns, (l.t1 - 1) // b.ns + 1)) AS k FROM levels l, b WHERE l.t1 > l.t0
)
SELECT c.trace_id, c.k * c.ns AS bucket_unix_nano, (c.k * c.ns - r.start_time_unix_nano) / 1e9 AS t_s, c.part,
       sum(c.level * (least(c.t1, (c.k + 1) * c.ns) - greatest(c.t0, c.k * c.ns))) / any_value(c.ns) AS mean_tasks,
       CAST(max(c.level) AS BIGINT) AS peak_tasks
FROM cut c LEFT JOIN runs r USING (trace_id)
GROUP BY c.trace_id, c.k, c.ns, r.start_time_unix_nano, c.part
""")

VIEWS = (CONCURRENCY,)
