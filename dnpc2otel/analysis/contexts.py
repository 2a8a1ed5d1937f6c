"""`analysis.contexts`: every span with its role and the role-neutral columns the other views read, and
`analysis.try_placement`: where each try ran (block, node, slot, host), from the links of its spans."""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .vocabulary import attribute, member, roles_sql

A = ANALYSIS

CONTEXTS = View("contexts", (
    ("trace_id", "VARCHAR", "the run"),
    ("span_id", "VARCHAR", ""),
    ("parent_span_id", "VARCHAR", ""),
    ("role", "VARCHAR", "run, task, try, executor, block, executor_task, execution, node, slot"),
    ("context_type", "VARCHAR", ""),
    ("context_id", "VARCHAR", ""),
    ("name", "VARCHAR", "span name"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("status_code", "VARCHAR", ""),
    ("status_message", "VARCHAR", ""),
    ("task_id", "BIGINT", ""),
    ("try_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("executor", "VARCHAR", "executor label"),
    ("block_id", "VARCHAR", ""),
    ("host", "VARCHAR", ""),
    ("state", "VARCHAR", "final state (tasks, tries)"),
    ("slots", "DOUBLE", "nodes: the slots (workers, cores) they offer"),
    ("memory_bytes", "BIGINT", "nodes: their memory"),
    ("incomplete", "BOOLEAN", "no terminal event was seen"),
), materialized=True, sql=f"""
SELECT s.trace_id, s.span_id, s.parent_span_id, r.role, s.context_type, {member('dnpc.context_id', 's')} AS context_id,
       s.name, s.start_time_unix_nano, s.end_time_unix_nano, s.status_code, s.status_message,
       TRY_CAST({attribute('task_id', 's')} AS BIGINT) AS task_id,
       TRY_CAST({attribute('try_id', 's')} AS BIGINT) AS try_id,
       {attribute('app', 's')} AS app, {attribute('executor', 's')} AS executor,
       {attribute('block_id', 's')} AS block_id, {attribute('host', 's')} AS host, {attribute('state', 's')} AS state,
       TRY_CAST({attribute('slots', 's')} AS DOUBLE) AS slots,
       TRY_CAST({attribute('node_memory', 's')} AS BIGINT) AS memory_bytes,
       coalesce(TRY_CAST({member('dnpc.incomplete', 's')} AS BOOLEAN), false) AS incomplete
FROM spans s JOIN ({roles_sql()}) r USING (context_type)
""")

# a try's own spans: the try and every span below it (executor task, worker execution, cctools task)
TRY_SPANS = View("try_spans", (
    ("trace_id", "VARCHAR", ""),
    ("try_span_id", "VARCHAR", "the try"),
    ("span_id", "VARCHAR", "the try itself or a span below it"),
    ("role", "VARCHAR", ""),
    ("context_type", "VARCHAR", ""),
    ("depth", "INTEGER", "0: the try"),
), materialized=True, sql=f"""
WITH RECURSIVE below(trace_id, try_span_id, span_id, depth) AS (
    SELECT trace_id, span_id, span_id, 0 FROM {A}.contexts WHERE role = 'try'
    UNION ALL
    SELECT s.trace_id, b.try_span_id, s.span_id, b.depth + 1
    FROM below b JOIN spans s ON s.trace_id = b.trace_id AND s.parent_span_id = b.span_id
    WHERE b.depth < 4
)
SELECT b.trace_id, b.try_span_id, b.span_id, c.role, c.context_type, b.depth
FROM below b JOIN {A}.contexts c ON c.trace_id = b.trace_id AND c.span_id = b.span_id
""")

TRY_PLACEMENT = View("try_placement", (
    ("trace_id", "VARCHAR", ""),
    ("try_span_id", "VARCHAR", ""),
    ("block_id", "VARCHAR", "the block it ran in"),
    ("block_span_id", "VARCHAR", ""),
    ("node", "VARCHAR", "the node (HTEX manager id, cctools worker) it ran on"),
    ("node_span_id", "VARCHAR", ""),
    ("slot", "VARCHAR", "the slot (HTEX worker) it ran in"),
    ("host", "VARCHAR", ""),
), materialized=True, sql=f"""
WITH linked AS (  -- every span a try's spans link to (ran_in_block, ran_on_manager, also_child_of a worker)
    SELECT t.trace_id, t.try_span_id, c.role, c.span_id, c.parent_span_id, c.context_id, c.block_id, c.host
    FROM {A}.try_spans t
    JOIN span_links l ON l.trace_id = t.trace_id AND l.span_id = t.span_id
    JOIN {A}.contexts c ON c.trace_id = l.linked_trace_id AND c.span_id = l.linked_span_id
    WHERE c.role IN ('block', 'node', 'slot')
), slot AS (
    SELECT * FROM linked WHERE role = 'slot'
    QUALIFY row_number() OVER (PARTITION BY trace_id, try_span_id ORDER BY span_id) = 1
), node AS (  -- linked directly, or the parent of its slot
    SELECT trace_id, try_span_id, span_id, parent_span_id, context_id, block_id, host FROM linked WHERE role = 'node'
    UNION ALL
    SELECT s.trace_id, s.try_span_id, n.span_id, n.parent_span_id, n.context_id, n.block_id, n.host
    FROM slot s JOIN {A}.contexts n ON n.trace_id = s.trace_id AND n.span_id = s.parent_span_id AND n.role = 'node'
), node1 AS (
    SELECT * FROM node QUALIFY row_number() OVER (PARTITION BY trace_id, try_span_id ORDER BY span_id) = 1
), block AS (  -- linked directly, or the parent of its node
    SELECT trace_id, try_span_id, span_id, block_id, 0 AS pref FROM linked WHERE role = 'block'
    UNION ALL
    SELECT n.trace_id, n.try_span_id, b.span_id, b.block_id, 1
    FROM node1 n JOIN {A}.contexts b ON b.trace_id = n.trace_id AND b.span_id = n.parent_span_id AND b.role = 'block'
), block1 AS (
    SELECT * FROM block QUALIFY row_number() OVER (PARTITION BY trace_id, try_span_id ORDER BY pref, span_id) = 1
)
SELECT t.trace_id, t.span_id AS try_span_id, coalesce(b.block_id, n.block_id, t.block_id) AS block_id,
       b.span_id AS block_span_id, n.context_id AS node, n.span_id AS node_span_id, s.context_id AS slot,
       coalesce(t.host, n.host, s.host) AS host
FROM {A}.contexts t
LEFT JOIN block1 b ON b.trace_id = t.trace_id AND b.try_span_id = t.span_id
LEFT JOIN node1 n ON n.trace_id = t.trace_id AND n.try_span_id = t.span_id
LEFT JOIN slot s ON s.trace_id = t.trace_id AND s.try_span_id = t.span_id
WHERE t.role = 'try'
""")

VIEWS = (CONTEXTS, TRY_SPANS, TRY_PLACEMENT)
