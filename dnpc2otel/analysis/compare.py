"""Two runs side by side: per app and part of the tasks' lives, how many tasks, their mean and total time
in each run, and the differences (b − a). Runs are named by trace id or run id. And the runs of a campaign,
each with its totals, to pick which two to compare."""

from __future__ import annotations

from ..tables import ANALYSIS, View

A = ANALYSIS

COMPARE_RUNS = View("compare_runs", (
    ("app", "VARCHAR", ""),
    ("part", "VARCHAR", "a part of task_phases, or 'task' for the whole task"),
    ("tasks_a", "BIGINT", "tasks of run a in which the part was observed"),
    ("tasks_b", "BIGINT", ""),
    ("mean_a_s", "DOUBLE", ""),
    ("mean_b_s", "DOUBLE", ""),
    ("delta_mean_s", "DOUBLE", "mean_b_s − mean_a_s"),
    ("total_a_s", "DOUBLE", ""),
    ("total_b_s", "DOUBLE", ""),
    ("delta_total_s", "DOUBLE", "total_b_s − total_a_s"),
    ("ratio_mean", "DOUBLE", "mean_b_s / mean_a_s"),
), params="run_a, run_b", sql=f"""
WITH picked AS (
    SELECT trace_id, CASE WHEN trace_id = run_a OR run_id = run_a THEN 'a' ELSE 'b' END AS side FROM runs
    WHERE trace_id IN (run_a, run_b) OR run_id IN (run_a, run_b)
), per_task AS (
    SELECT p.side, t.app, t.part, t.task_span_id, sum(t.duration_s) AS s
    FROM {A}.task_phases t JOIN picked p USING (trace_id) GROUP BY ALL
    UNION ALL
    SELECT p.side, b.app, 'task', b.span_id, b.duration_s FROM {A}.task_breakdown b JOIN picked p USING (trace_id)
), agg AS (
    SELECT app, part, count(*) FILTER (WHERE side = 'a') AS tasks_a, count(*) FILTER (WHERE side = 'b') AS tasks_b,
           avg(s) FILTER (WHERE side = 'a') AS mean_a_s, avg(s) FILTER (WHERE side = 'b') AS mean_b_s,
           sum(s) FILTER (WHERE side = 'a') AS total_a_s, sum(s) FILTER (WHERE side = 'b') AS total_b_s
    FROM per_task GROUP BY ALL
)
SELECT app, part, tasks_a, tasks_b, mean_a_s, mean_b_s, mean_b_s - mean_a_s AS delta_mean_s, total_a_s, total_b_s,
       total_b_s - total_a_s AS delta_total_s, mean_b_s / nullif(mean_a_s, 0) AS ratio_mean
FROM agg
""")

# the runs of each campaign (dnpc2otel/campaign/context.py) with their totals, from the campaign's links
CAMPAIGN_RUNS = View("campaign_runs", (
    ("campaign", "VARCHAR", "the campaign's name"),
    ("trace_id", "VARCHAR", "the run's trace"),
    ("run_id", "VARCHAR", ""),
    ("run_dir", "VARCHAR", ""),
    ("tasks", "BIGINT", ""),
    ("tries", "BIGINT", ""),
    ("failed_tasks", "BIGINT", ""),
    ("spans", "BIGINT", ""),
    ("wall_s", "DOUBLE", "the run root's duration"),
    ("wall_vs_mean", "DOUBLE", "wall_s / the mean wall_s of the campaign's runs"),
), sql="""
SELECT c.attributes->>'dnpc.campaign.name' AS campaign, r.trace_id, r.run_id, r.run_dir,
       (l.attributes->>'dnpc.run.tasks')::BIGINT AS tasks, (l.attributes->>'dnpc.run.tries')::BIGINT AS tries,
       (l.attributes->>'dnpc.run.failed_tasks')::BIGINT AS failed_tasks,
       (l.attributes->>'dnpc.run.spans')::BIGINT AS spans, (l.attributes->>'dnpc.run.wall_s')::DOUBLE AS wall_s,
       wall_s / nullif(avg(wall_s) OVER (PARTITION BY c.span_id), 0) AS wall_vs_mean
FROM spans c
JOIN span_links l ON l.trace_id = c.trace_id AND l.span_id = c.span_id
                 AND l.attributes->>'dnpc.relation' = 'campaign_run'
JOIN runs r ON r.trace_id = l.linked_trace_id
WHERE c.context_type = 'campaign'
""")

VIEWS = (COMPARE_RUNS, CAMPAIGN_RUNS)
