"""Busy and idle slots of nodes (HTEX managers, cctools workers) and blocks, over time.

A node offers `slots` (HTEX workers, cctools cores) from its start to its end; each execution on it (an
HTEX worker execution, a cctools task from dispatch to the worker's result) holds one slot (a cctools task:
the cores it was given) while it runs. Per node, the busy slots are a step function capped at the slots
it offers, so utilisation never exceeds 100% — however coarse the buckets, and while blocks and nodes come
and go (each bucket counts only the node time inside it). Nodes whose slots no source gives are left out.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .vocabulary import BLOCK_RUNNING, SLOTS_HELD, events_sql, member

A = ANALYSIS

NODE_SEGMENTS = View("node_segments", (
    ("trace_id", "VARCHAR", ""),
    ("node_span_id", "VARCHAR", ""),
    ("start_time_unix_nano", "BIGINT", "a stretch of the node's life with a constant number of executions"),
    ("end_time_unix_nano", "BIGINT", ""),
    ("slots", "DOUBLE", "slots the node offers"),
    ("executions", "DOUBLE", "slots its executions hold (may exceed slots: prefetched tasks)"),
    ("busy_slots", "DOUBLE", "min(executions, slots)"),
), materialized=True, sql=f"""
WITH vocab AS ({events_sql()}),
slot_count AS (
    SELECT trace_id, parent_span_id AS span_id, count(*) AS n FROM {A}.contexts WHERE role = 'slot' GROUP BY ALL
), nodes AS (
    SELECT n.trace_id, n.span_id, n.start_time_unix_nano AS t0, n.end_time_unix_nano AS t1,
           coalesce(n.slots, s.n) AS slots
    FROM {A}.contexts n LEFT JOIN slot_count s USING (trace_id, span_id)
    WHERE n.role = 'node' AND coalesce(n.slots, s.n) > 0
), execs AS (
    SELECT trace_id, span_id, parent_span_id, start_time_unix_nano AS t0, end_time_unix_nano AS t1
    FROM {A}.contexts WHERE role = 'execution'
), placed AS (  -- the node of an execution: linked or parent, directly or through its slot
    SELECT e.trace_id, e.span_id, c.role, c.span_id AS target, c.parent_span_id AS target_parent
    FROM execs e JOIN span_links l ON l.trace_id = e.trace_id AND l.span_id = e.span_id
    JOIN {A}.contexts c ON c.trace_id = l.linked_trace_id AND c.span_id = l.linked_span_id
    WHERE c.role IN ('node', 'slot')
    UNION ALL
    SELECT e.trace_id, e.span_id, c.role, c.span_id, c.parent_span_id
    FROM execs e JOIN {A}.contexts c ON c.trace_id = e.trace_id AND c.span_id = e.parent_span_id
    WHERE c.role IN ('node', 'slot')
), exec_node AS (
    SELECT trace_id, span_id, CASE WHEN role = 'node' THEN target ELSE target_parent END AS node_span_id FROM placed
    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY role, target) = 1
), marks AS (  -- on the node from dispatch (or worker start) to the worker's result; else the span
    SELECT e.trace_id, e.span_id,
           min(o.time_unix_nano) FILTER (WHERE v.milestone IN ('dispatched', 'worker_started')) AS b0,
           min(o.time_unix_nano) FILTER (WHERE v.milestone = 'worker_finished') AS b1,
           max(TRY_CAST({member(SLOTS_HELD, 'o', 'event_attributes')} AS DOUBLE)) AS held
    FROM execs e JOIN observations o ON o.trace_id = e.trace_id AND o.span_id = e.span_id
    JOIN {A}.contexts c ON c.trace_id = e.trace_id AND c.span_id = e.span_id
    LEFT JOIN vocab v ON v.context_type = c.context_type AND v.event = o.event
    GROUP BY ALL
), busy AS (
    SELECT x.trace_id, x.node_span_id, greatest(coalesce(m.b0, e.t0), n.t0) AS b0,
           least(coalesce(CASE WHEN m.b1 >= coalesce(m.b0, e.t0) THEN m.b1 END, e.t1), n.t1) AS b1,
           coalesce(m.held, 1) AS w
    FROM exec_node x JOIN execs e USING (trace_id, span_id)
    JOIN nodes n ON n.trace_id = x.trace_id AND n.span_id = x.node_span_id
    LEFT JOIN marks m ON m.trace_id = x.trace_id AND m.span_id = x.span_id
), ev AS (
    SELECT trace_id, node_span_id, b0 AS t, w AS d FROM busy WHERE b1 > b0
    UNION ALL SELECT trace_id, node_span_id, b1, -w FROM busy WHERE b1 > b0
    UNION ALL SELECT trace_id, span_id, t0, 0 FROM nodes
    UNION ALL SELECT trace_id, span_id, t1, 0 FROM nodes
), steps AS (
    SELECT trace_id, node_span_id, t, sum(d) AS d FROM ev GROUP BY ALL
), seg AS (
    SELECT trace_id, node_span_id, t AS t0, lead(t) OVER w AS t1,
           round(sum(d) OVER (w ROWS UNBOUNDED PRECEDING), 6) AS executions
    FROM steps WINDOW w AS (PARTITION BY trace_id, node_span_id ORDER BY t)
)
SELECT s.trace_id, s.node_span_id, s.t0 AS start_time_unix_nano, s.t1 AS end_time_unix_nano, n.slots,
       s.executions, least(s.executions, n.slots) AS busy_slots
FROM seg s JOIN nodes n ON n.trace_id = s.trace_id AND n.span_id = s.node_span_id
WHERE s.t1 > s.t0
""")

NODE_UTILISATION = View("node_utilisation", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the node"),
    ("node", "VARCHAR", "HTEX manager id, cctools worker"),
    ("executor", "VARCHAR", ""),
    ("block_id", "VARCHAR", ""),
    ("host", "VARCHAR", ""),
    ("slots", "DOUBLE", ""),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("alive_s", "DOUBLE", "its life"),
    ("slot_s", "DOUBLE", "slots × life"),
    ("busy_slot_s", "DOUBLE", "slot-seconds its executions held"),
    ("idle_slot_s", "DOUBLE", ""),
    ("idle_s", "DOUBLE", "time it ran nothing at all"),
    ("utilisation", "DOUBLE", "busy_slot_s / slot_s (0..1)"),
    ("peak_executions", "DOUBLE", "most slots held at once (above slots: prefetched tasks)"),
), sql=f"""
SELECT n.trace_id, n.span_id, n.context_id AS node, n.executor, n.block_id, n.host, any_value(g.slots) AS slots,
       n.start_time_unix_nano, n.end_time_unix_nano, (n.end_time_unix_nano - n.start_time_unix_nano) / 1e9 AS alive_s,
       sum(g.slots * (g.end_time_unix_nano - g.start_time_unix_nano)) / 1e9 AS slot_s,
       sum(g.busy_slots * (g.end_time_unix_nano - g.start_time_unix_nano)) / 1e9 AS busy_slot_s,
       sum((g.slots - g.busy_slots) * (g.end_time_unix_nano - g.start_time_unix_nano)) / 1e9 AS idle_slot_s,
       coalesce(sum(g.end_time_unix_nano - g.start_time_unix_nano) FILTER (WHERE g.busy_slots = 0), 0) / 1e9 AS idle_s,
       sum(g.busy_slots * (g.end_time_unix_nano - g.start_time_unix_nano))
           / nullif(sum(g.slots * (g.end_time_unix_nano - g.start_time_unix_nano)), 0) AS utilisation,
       max(g.executions) AS peak_executions
FROM {A}.contexts n JOIN {A}.node_segments g ON g.trace_id = n.trace_id AND g.node_span_id = n.span_id
GROUP BY n.trace_id, n.span_id, n.context_id, n.executor, n.block_id, n.host, n.start_time_unix_nano,
         n.end_time_unix_nano
""")

UTILISATION = View("utilisation", (
    ("trace_id", "VARCHAR", ""),
    ("executor", "VARCHAR", ""),
    ("bucket_unix_nano", "BIGINT", "start of the bucket (multiples of bucket_s since the epoch)"),
    ("t_s", "DOUBLE", "that start, in seconds since the run's start"),
    ("nodes", "DOUBLE", "nodes alive, time-weighted over the bucket"),
    ("slots", "DOUBLE", "slots offered, time-weighted"),
    ("busy_slots", "DOUBLE", "slots busy, time-weighted"),
    ("idle_slots", "DOUBLE", ""),
    ("utilisation", "DOUBLE", "busy_slots / slots (0..1)"),
    ("idle_node_s", "DOUBLE", "node-seconds in the bucket with nothing running"),
), params="bucket_s := 60.0", sql=f"""
WITH b AS (SELECT CAST(round(bucket_s * 1e9) AS BIGINT) AS ns),
cut AS (
    SELECT g.*, n.executor, b.ns,
           unnest(range(g.start_time_unix_nano // b.ns, (g.end_time_unix_nano - 1) // b.ns + 1)) AS k
    FROM {A}.node_segments g JOIN {A}.contexts n ON n.trace_id = g.trace_id AND n.span_id = g.node_span_id, b
), part AS (
    SELECT trace_id, executor, k, ns, slots, busy_slots,
           least(end_time_unix_nano, (k + 1) * ns) - greatest(start_time_unix_nano, k * ns) AS len
    FROM cut
)
SELECT p.trace_id, p.executor, p.k * p.ns AS bucket_unix_nano, (p.k * p.ns - r.start_time_unix_nano) / 1e9 AS t_s,
       sum(p.len) / any_value(p.ns) AS nodes, sum(p.slots * p.len) / any_value(p.ns) AS slots,
       sum(p.busy_slots * p.len) / any_value(p.ns) AS busy_slots,
       sum((p.slots - p.busy_slots) * p.len) / any_value(p.ns) AS idle_slots,
       sum(p.busy_slots * p.len) / nullif(sum(p.slots * p.len), 0) AS utilisation,
       coalesce(sum(p.len) FILTER (WHERE p.busy_slots = 0), 0) / 1e9 AS idle_node_s
FROM part p LEFT JOIN runs r USING (trace_id)
GROUP BY p.trace_id, p.executor, p.k, p.ns, r.start_time_unix_nano
""")

BLOCKS = View("block_utilisation", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the block"),
    ("executor", "VARCHAR", ""),
    ("block_id", "VARCHAR", ""),
    ("submitted_unix_nano", "BIGINT", "the block's start: its job submitted"),
    ("started_unix_nano", "BIGINT", "its first node started (else: the provider said RUNNING)"),
    ("end_time_unix_nano", "BIGINT", ""),
    ("queue_wait_s", "DOUBLE", "submitted → started"),
    ("tasks_pending_at_submit", "BIGINT", "tasks pending in the DFK (dependencies, launch) when it was submitted"),
    ("tasks_queued_at_submit", "BIGINT", "tasks handed to the executor and not yet running then"),
    ("nodes", "BIGINT", ""),
    ("node_s", "DOUBLE", "node-seconds of its nodes"),
    ("slot_s", "DOUBLE", ""),
    ("busy_slot_s", "DOUBLE", ""),
    ("idle_node_s", "DOUBLE", "node-seconds with nothing running"),
    ("utilisation", "DOUBLE", "busy_slot_s / slot_s (0..1)"),
), sql=f"""
WITH blocks AS (SELECT * FROM {A}.contexts WHERE role = 'block'),
nodes AS (
    SELECT b.trace_id, b.span_id AS block_span_id, min(n.start_time_unix_nano) AS first_start, count(*) AS nodes,
           sum(u.alive_s) AS node_s, sum(u.slot_s) AS slot_s, sum(u.busy_slot_s) AS busy_slot_s,
           sum(u.idle_s) AS idle_node_s
    FROM blocks b JOIN {A}.contexts n ON n.trace_id = b.trace_id AND n.parent_span_id = b.span_id AND n.role = 'node'
    LEFT JOIN {A}.node_utilisation u ON u.trace_id = n.trace_id AND u.span_id = n.span_id
    GROUP BY ALL
), running AS (
    SELECT b.trace_id, b.span_id, min(o.time_unix_nano) AS t
    FROM blocks b JOIN observations o ON o.trace_id = b.trace_id AND o.span_id = b.span_id
    WHERE o.event = '{BLOCK_RUNNING}' GROUP BY ALL
), started AS (
    SELECT b.*, coalesce(n.first_start, r.t) AS started, n.nodes, n.node_s, n.slot_s, n.busy_slot_s, n.idle_node_s
    FROM blocks b LEFT JOIN nodes n ON n.trace_id = b.trace_id AND n.block_span_id = b.span_id
    LEFT JOIN running r ON r.trace_id = b.trace_id AND r.span_id = b.span_id
), waiting AS (
    SELECT s.trace_id, s.span_id,
           count(DISTINCT p.task_span_id) FILTER (WHERE p.part = 'pending') AS pending,
           count(DISTINCT p.task_span_id) FILTER (WHERE p.part IN ('launch', 'queued', 'dispatch')
               OR (p.part = 'unattributed' AND p.covers NOT LIKE '%execution%' AND p.covers NOT LIKE 'pending%'))
               AS queued
    FROM started s JOIN {A}.task_timeline p ON p.trace_id = s.trace_id
         AND p.start_time_unix_nano <= s.start_time_unix_nano AND p.end_time_unix_nano > s.start_time_unix_nano
    GROUP BY ALL
)
SELECT s.trace_id, s.span_id, s.executor, s.block_id, s.start_time_unix_nano AS submitted_unix_nano,
       s.started AS started_unix_nano, s.end_time_unix_nano,
       (greatest(s.started, s.start_time_unix_nano) - s.start_time_unix_nano) / 1e9 AS queue_wait_s,
       coalesce(w.pending, 0) AS tasks_pending_at_submit, coalesce(w.queued, 0) AS tasks_queued_at_submit,
       coalesce(s.nodes, 0) AS nodes, s.node_s, s.slot_s, s.busy_slot_s, s.idle_node_s,
       s.busy_slot_s / nullif(s.slot_s, 0) AS utilisation
FROM started s LEFT JOIN waiting w ON w.trace_id = s.trace_id AND w.span_id = s.span_id
""")

VIEWS = (NODE_SEGMENTS, NODE_UTILISATION, UTILISATION, BLOCKS)
