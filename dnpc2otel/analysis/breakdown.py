"""Where each task's time went: its life cut at milestones into parts that add up to its duration.

A try runs from `try_start` through `executor_received`, `dispatched`, `worker_started` and
`worker_finished` to `try_end`; each milestone is the earliest of the events the vocabulary names for it
(the best observed kind first), clamped into the try's span. Two milestones out of order (clock skew, a
race in a source) cannot both be right: the less trusted one is dropped. A part runs from one kept
milestone to the next and is named after the milestone it starts at (`launch`, `queued`, `dispatch`,
`execution`, `result_return`); where a milestone was not observed (no executor log, no worker log) the
two parts around it cannot be told apart and their time is `unattributed`, with `covers` naming the parts
it holds (e.g. `queued+dispatch`). A part column is NULL when that part was not observed, 0 when it was
observed to take no time.

A task's life: `pending` (submitted → its first try starts: waiting on dependencies, then launch),
`retries` (first try start → last try start: the tries that failed and the waits between them), the last
try's parts, `completion` (last try returned → the task's end) and, for a join app, `join_wait` (from
`joining` to the end). Parts are disjoint and consecutive, so they add up to the span's duration exactly.
"""

from __future__ import annotations

from ..tables import ANALYSIS, View
from .vocabulary import EVENTS, JOINING, MILESTONES, PARTS, events_sql

A = ANALYSIS
TRY_PARTS = [PARTS[m] for m in MILESTONES[:-1]]
TASK_PARTS = ["pending", "retries", *TRY_PARTS, "completion", "join_wait"]
_NAMES = "[" + ", ".join(f"'{p}'" for p in TASK_PARTS) + "]"
_TRY_NAMES = "[" + ", ".join(f"'{p}'" for p in TRY_PARTS) + "]"
_SEQ = ", ".join(f"('{m}', {i})" for i, m in enumerate(MILESTONES))
assert {e[0] for e in EVENTS} == set(MILESTONES[1:-1])

VOCABULARY = View("milestone_events", (
    ("milestone", "VARCHAR", "executor_received, dispatched, worker_started, worker_finished"),
    ("context_type", "VARCHAR", "the try itself or a span below it"),
    ("event", "VARCHAR", ""),
    ("preference", "INTEGER", "lower wins when several are observed"),
    ("trust", "INTEGER", "of two milestones out of order, the lower is dropped"),
    ("meaning", "VARCHAR", ""),
), sql=events_sql())

TRY_MILESTONES = View("try_milestones", (
    ("trace_id", "VARCHAR", ""),
    ("try_span_id", "VARCHAR", ""),
    ("milestone", "VARCHAR", "try_start, executor_received, dispatched, worker_started, worker_finished, try_end"),
    ("seq", "INTEGER", "its place in that order"),
    ("time_unix_nano", "BIGINT", "clamped into the try's span; NULL: not observed"),
    ("observed_unix_nano", "BIGINT", "as the source gave it"),
    ("context_type", "VARCHAR", "whose event it is"),
    ("event", "VARCHAR", "which event (NULL: the span's own bound)"),
    ("kept", "BOOLEAN", "observed and in order with every milestone at least as trusted"),
), materialized=True, sql=f"""
WITH vocab AS ({events_sql()}),
tries AS (
    SELECT trace_id, span_id, start_time_unix_nano AS t0, end_time_unix_nano AS t1 FROM {A}.contexts WHERE role = 'try'
), cand AS (
    SELECT ts.trace_id, ts.try_span_id, v.milestone, v.trust, v.preference, ts.context_type, v.event,
           min(o.time_unix_nano) AS t
    FROM {A}.try_spans ts
    JOIN observations o ON o.trace_id = ts.trace_id AND o.span_id = ts.span_id
    JOIN vocab v ON v.context_type = ts.context_type AND v.event = o.event
    WHERE o.time_unix_nano IS NOT NULL
    GROUP BY ALL
), best AS (
    SELECT trace_id, try_span_id, milestone, trust, context_type, event, t FROM cand
    QUALIFY row_number() OVER (PARTITION BY trace_id, try_span_id, milestone ORDER BY preference, t, context_type) = 1
    UNION ALL
    SELECT trace_id, span_id, 'try_start', 100, 'try', NULL, t0 FROM tries
    UNION ALL
    SELECT trace_id, span_id, 'try_end', 100, 'try', NULL, t1 FROM tries
), m AS (
    SELECT tr.trace_id, tr.span_id AS try_span_id, s.milestone, s.seq, x.context_type, x.event, x.trust,
           CASE WHEN x.t IS NOT NULL THEN least(greatest(x.t, tr.t0), tr.t1) END AS t, x.t AS observed
    FROM tries tr CROSS JOIN (VALUES {_SEQ}) AS s(milestone, seq)
    LEFT JOIN best x ON x.trace_id = tr.trace_id AND x.try_span_id = tr.span_id AND x.milestone = s.milestone
)
SELECT a.trace_id, a.try_span_id, a.milestone, a.seq, a.t AS time_unix_nano, a.observed AS observed_unix_nano,
       a.context_type, a.event,
       a.t IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM m b
           WHERE b.trace_id = a.trace_id AND b.try_span_id = a.try_span_id AND b.seq <> a.seq AND b.t IS NOT NULL
             AND b.trust >= a.trust AND ((b.seq < a.seq AND b.t > a.t) OR (b.seq > a.seq AND b.t < a.t))
       ) AS kept
FROM m a
""")

_PART_COLUMNS = {
    "launch": "the DFK hands the try to its executor (try start → executor received)",
    "queued": "waiting in the executor: interchange, Work Queue / TaskVine queue (→ dispatched)",
    "dispatch": "dispatched → the worker starts it (manager, input transfer)",
    "execution": "on the worker",
    "result_return": "worker finished → the DFK has the result (try end)",
}


def _pivot(parts: list[str], alias: str = "p") -> str:
    cols = [f"sum({alias}.duration_s) FILTER (WHERE {alias}.part = '{p}') AS {p}_s" for p in [*parts, "unattributed"]]
    cols.append(f"string_agg({alias}.covers, ', ' ORDER BY {alias}.step) FILTER (WHERE {alias}.part = 'unattributed')"
                " AS unattributed_parts")
    return ",\n       ".join(cols)


TRY_PHASES = View("try_phases", (
    ("trace_id", "VARCHAR", ""),
    ("try_span_id", "VARCHAR", ""),
    ("step", "INTEGER", "order in the try's life"),
    ("part", "VARCHAR", "launch, queued, dispatch, execution, result_return or unattributed"),
    ("covers", "VARCHAR", "the parts it holds ('queued+dispatch' for an unattributed one)"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", ""),
), materialized=True, sql=f"""
WITH seg AS (
    SELECT trace_id, try_span_id, seq, time_unix_nano AS t,
           lead(seq) OVER w AS next_seq, lead(time_unix_nano) OVER w AS next_t
    FROM {A}.try_milestones WHERE kept
    WINDOW w AS (PARTITION BY trace_id, try_span_id ORDER BY seq)
)
SELECT trace_id, try_span_id, seq AS step,
       CASE WHEN next_seq = seq + 1 THEN {_TRY_NAMES}[seq + 1] ELSE 'unattributed' END AS part,
       array_to_string(list_slice({_TRY_NAMES}, seq + 1, next_seq), '+') AS covers,
       t AS start_time_unix_nano, next_t AS end_time_unix_nano, (next_t - t) / 1e9 AS duration_s
FROM seg WHERE next_seq IS NOT NULL
""")

TRY_BREAKDOWN = View("try_breakdown", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the try"),
    ("task_span_id", "VARCHAR", ""),
    ("task_id", "BIGINT", ""),
    ("try_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("executor", "VARCHAR", ""),
    ("final_state", "VARCHAR", ""),
    ("status_code", "VARCHAR", ""),
    ("exception", "VARCHAR", "type of the exception it failed with"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", "= the sum of the parts below"),
    *((f"{p}_s", "DOUBLE", m) for p, m in _PART_COLUMNS.items()),
    ("unattributed_s", "DOUBLE", "time between milestones with one not observed in between"),
    ("unattributed_parts", "VARCHAR", "which parts that time holds, e.g. 'queued+dispatch'"),
    ("block_id", "VARCHAR", ""),
    ("node", "VARCHAR", "HTEX manager or cctools worker"),
    ("slot", "VARCHAR", "HTEX worker"),
    ("host", "VARCHAR", ""),
), materialized=True, sql=f"""
WITH parts AS (
    SELECT trace_id, try_span_id,
       {_pivot(TRY_PARTS)}
    FROM {A}.try_phases p GROUP BY trace_id, try_span_id
)
SELECT t.trace_id, t.span_id, t.parent_span_id AS task_span_id, coalesce(t.task_id, k.task_id) AS task_id, t.try_id,
       coalesce(k.app, k.name, t.app) AS app, coalesce(t.executor, k.executor) AS executor, t.state AS final_state,
       t.status_code, CASE WHEN t.status_code = 'ERROR' THEN regexp_extract(t.status_message, '^[A-Za-z_][\\w.]*') END
           AS exception,
       t.start_time_unix_nano, t.end_time_unix_nano,
       (t.end_time_unix_nano - t.start_time_unix_nano) / 1e9 AS duration_s,
       {", ".join(f"p.{p}_s" for p in TRY_PARTS)}, p.unattributed_s, p.unattributed_parts,
       pl.block_id, pl.node, pl.slot, pl.host
FROM {A}.contexts t
LEFT JOIN {A}.contexts k ON k.trace_id = t.trace_id AND k.span_id = t.parent_span_id AND k.role = 'task'
LEFT JOIN parts p ON p.trace_id = t.trace_id AND p.try_span_id = t.span_id
LEFT JOIN {A}.try_placement pl ON pl.trace_id = t.trace_id AND pl.try_span_id = t.span_id
WHERE t.role = 'try'
""")

TASK_PHASES = View("task_phases", (
    ("trace_id", "VARCHAR", ""),
    ("task_span_id", "VARCHAR", ""),
    ("task_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("step", "INTEGER", "order in the task's life"),
    ("part", "VARCHAR", "pending, retries, launch, queued, dispatch, execution, result_return, completion, "
                        "join_wait or unattributed"),
    ("covers", "VARCHAR", "the parts it holds ('queued+dispatch' for an unattributed one)"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", ""),
), materialized=True, sql=f"""
WITH tasks AS (
    SELECT trace_id, span_id, start_time_unix_nano AS t0, end_time_unix_nano AS t1, task_id, coalesce(app, name) AS app
    FROM {A}.contexts WHERE role = 'task'
), tries AS (
    SELECT trace_id, parent_span_id AS task_span_id, span_id, start_time_unix_nano AS t0,
           row_number() OVER (PARTITION BY trace_id, parent_span_id
                              ORDER BY try_id DESC NULLS LAST, start_time_unix_nano DESC) AS from_last
    FROM {A}.contexts WHERE role = 'try'
), m AS (
    SELECT trace_id, span_id AS task_span_id, 0 AS seq, t0 AS t FROM tasks
    UNION ALL
    SELECT trace_id, task_span_id, 1, min(t0) FROM tries GROUP BY ALL
    UNION ALL
    SELECT f.trace_id, f.task_span_id, tm.seq + 2, tm.time_unix_nano
    FROM tries f JOIN {A}.try_milestones tm ON tm.trace_id = f.trace_id AND tm.try_span_id = f.span_id
    WHERE f.from_last = 1 AND tm.kept
    UNION ALL
    SELECT k.trace_id, k.span_id, 8, min(o.time_unix_nano)
    FROM tasks k JOIN observations o ON o.trace_id = k.trace_id AND o.span_id = k.span_id
    WHERE o.context_type = '{JOINING[0]}' AND o.event = '{JOINING[1]}' AND o.time_unix_nano IS NOT NULL
    GROUP BY ALL
    UNION ALL
    SELECT trace_id, span_id, 9, t1 FROM tasks
), clamped AS (
    SELECT m.trace_id, m.task_span_id, m.seq, CASE WHEN m.t IS NOT NULL THEN least(greatest(m.t, k.t0), k.t1) END AS t
    FROM m JOIN tasks k ON k.trace_id = m.trace_id AND k.span_id = m.task_span_id WHERE m.t IS NOT NULL
), kept AS (  -- `joining` counts only after the last try returned
    SELECT * FROM clamped
    QUALIFY seq <> 8 OR t >= max(t) FILTER (WHERE seq < 8) OVER (PARTITION BY trace_id, task_span_id)
), seg AS (
    SELECT trace_id, task_span_id, seq, t, lead(seq) OVER w AS next_seq, lead(t) OVER w AS next_t
    FROM kept WINDOW w AS (PARTITION BY trace_id, task_span_id ORDER BY seq)
)
SELECT s.trace_id, s.task_span_id, k.task_id, k.app, s.seq AS step,
       CASE WHEN s.next_seq = s.seq + 1 OR (s.seq = 7 AND s.next_seq = 9) THEN {_NAMES}[s.seq + 1]
            ELSE 'unattributed' END AS part,
       array_to_string(list_filter(list_slice({_NAMES}, s.seq + 1, s.next_seq),
                                   lambda x: x <> 'join_wait' OR s.seq = 8), '+') AS covers,
       s.t AS start_time_unix_nano, s.next_t AS end_time_unix_nano, (s.next_t - s.t) / 1e9 AS duration_s
FROM seg s JOIN tasks k ON k.trace_id = s.trace_id AND k.span_id = s.task_span_id
WHERE s.next_seq IS NOT NULL
""")

TASK_TIMELINE = View("task_timeline", (
    ("trace_id", "VARCHAR", ""),
    ("task_span_id", "VARCHAR", ""),
    ("task_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("step", "INTEGER", "order in the task's life"),
    ("part", "VARCHAR", "as in task_phases, with `retries` opened up: the parts of the tries before the "
                        "last, and retry_wait between them"),
    ("covers", "VARCHAR", ""),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", ""),
), materialized=True, sql=f"""
WITH r AS (
    SELECT trace_id, task_span_id, task_id, app, start_time_unix_nano AS r0, end_time_unix_nano AS r1
    FROM {A}.task_phases WHERE part = 'retries' AND end_time_unix_nano > start_time_unix_nano
), tries AS (
    SELECT trace_id, parent_span_id AS task_span_id, span_id, start_time_unix_nano AS t0,
           end_time_unix_nano AS t1,
           lead(start_time_unix_nano) OVER (PARTITION BY trace_id, parent_span_id
                                            ORDER BY start_time_unix_nano, try_id) AS next0
    FROM {A}.contexts WHERE role = 'try'
), early AS (  -- the tries before the last: each from its start to the next one's
    SELECT t.*, r.task_id, r.app, r.r0, r.r1 FROM tries t JOIN r USING (trace_id, task_span_id)
    WHERE t.t0 < r.r1 AND t.next0 IS NOT NULL
), rows AS (
    SELECT trace_id, task_span_id, task_id, app, part, covers, start_time_unix_nano AS s, end_time_unix_nano AS e
    FROM {A}.task_phases WHERE part <> 'retries'
    UNION ALL
    SELECT e.trace_id, e.task_span_id, e.task_id, e.app, p.part, p.covers, greatest(p.start_time_unix_nano, e.r0),
           least(p.end_time_unix_nano, e.next0, e.r1)
    FROM early e JOIN {A}.try_phases p ON p.trace_id = e.trace_id AND p.try_span_id = e.span_id
    WHERE least(p.end_time_unix_nano, e.next0, e.r1) >= greatest(p.start_time_unix_nano, e.r0)
    UNION ALL
    SELECT trace_id, task_span_id, task_id, app, 'retry_wait', 'retry_wait', greatest(least(t1, next0), r0),
           least(next0, r1)
    FROM early WHERE least(next0, r1) > greatest(least(t1, next0), r0)
)
SELECT trace_id, task_span_id, task_id, app,
       CAST(row_number() OVER (PARTITION BY trace_id, task_span_id ORDER BY s, e) - 1 AS INTEGER) AS step,
       part, covers, s AS start_time_unix_nano, e AS end_time_unix_nano, (e - s) / 1e9 AS duration_s
FROM rows
""")

_TASK_COLUMNS = {
    "pending": "submitted → its first try starts (waiting on dependencies, then the launch)",
    "retries": "first try start → last try start (failed tries and the waits between them)",
    **_PART_COLUMNS,
    "completion": "last try returned → the task's end",
    "join_wait": "a join app: joining → the end (waiting for the tasks it returned)",
}

TASK_BREAKDOWN = View("task_breakdown", (
    ("trace_id", "VARCHAR", ""),
    ("span_id", "VARCHAR", "the task"),
    ("task_id", "BIGINT", ""),
    ("app", "VARCHAR", ""),
    ("executor", "VARCHAR", ""),
    ("final_state", "VARCHAR", ""),
    ("status_code", "VARCHAR", ""),
    ("tries", "BIGINT", ""),
    ("failed_tries", "BIGINT", "tries with status ERROR"),
    ("start_time_unix_nano", "BIGINT", ""),
    ("end_time_unix_nano", "BIGINT", ""),
    ("duration_s", "DOUBLE", "= the sum of the parts below"),
    *((f"{p}_s", "DOUBLE", m) for p, m in _TASK_COLUMNS.items()),
    ("unattributed_s", "DOUBLE", "time between milestones with one not observed in between"),
    ("unattributed_parts", "VARCHAR", "which parts that time holds, e.g. 'queued+dispatch'"),
    ("block_id", "VARCHAR", "where its last try ran"),
    ("node", "VARCHAR", ""),
    ("slot", "VARCHAR", ""),
    ("host", "VARCHAR", ""),
), materialized=True, sql=f"""
WITH parts AS (
    SELECT trace_id, task_span_id,
       {_pivot(TASK_PARTS)}
    FROM {A}.task_phases p GROUP BY trace_id, task_span_id
), tries AS (
    SELECT trace_id, task_span_id, count(*) AS tries, count(*) FILTER (WHERE status_code = 'ERROR') AS failed_tries,
           arg_max(block_id, coalesce(try_id, -1)) AS block_id, arg_max(node, coalesce(try_id, -1)) AS node,
           arg_max(slot, coalesce(try_id, -1)) AS slot, arg_max(host, coalesce(try_id, -1)) AS host
    FROM {A}.try_breakdown GROUP BY ALL
)
SELECT k.trace_id, k.span_id, k.task_id, coalesce(k.app, k.name) AS app, k.executor, k.state AS final_state,
       k.status_code, coalesce(t.tries, 0) AS tries, coalesce(t.failed_tries, 0) AS failed_tries,
       k.start_time_unix_nano, k.end_time_unix_nano,
       (k.end_time_unix_nano - k.start_time_unix_nano) / 1e9 AS duration_s,
       {", ".join(f"p.{p}_s" for p in TASK_PARTS)}, p.unattributed_s, p.unattributed_parts,
       t.block_id, t.node, t.slot, t.host
FROM {A}.contexts k
LEFT JOIN parts p ON p.trace_id = k.trace_id AND p.task_span_id = k.span_id
LEFT JOIN tries t ON t.trace_id = k.trace_id AND t.task_span_id = k.span_id
WHERE k.role = 'task'
""")

VIEWS = (VOCABULARY, TRY_MILESTONES, TRY_PHASES, TRY_BREAKDOWN, TASK_PHASES, TASK_TIMELINE, TASK_BREAKDOWN)
