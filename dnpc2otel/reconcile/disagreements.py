"""Where sources disagree, and where a context is left open: recorded, never silently resolved.

Kinds of disagreement (table `disagreements`, one row each, with its size):
- `same_event_apart`: two sources record the same event of a context at times further apart than the
  threshold (e.g. parsl.log's exec_done and monitoring.db's exec_done status row).
- `impossible_order`: events of a context in an order its type forbids (its `order` list), e.g. a try
  `running` before it was `launched` (a known race of Parsl's monitoring for fast tasks).
- `missing_in_source`: a source that describes contexts of a type in a run lacks one that others have (and
  that its definition expects it to describe: `[describes.TYPE]`).
- `parent_conflict`: a context claimed as child of two different contexts of the same type (an executor
  id reused, a try launched twice): no parent is chosen among them; the context hangs under the
  workflow, marked, instead of under a wrong parent.
- `incomplete`: a context of a type with `terminal` events has none (a crashed or killed run): its span
  ends at its last observation and carries `dnpc.incomplete = true`.
- `repeated_event`: one source records an event its type allows `once` several times (a try launched
  twice).
- `conflicting_values`: an attribute its type calls `unique` has several values (a block with two job ids).
- `too_many_children`: more children of a type than `max_children` allows (a try with two executor tasks:
  an executor id reused or a double launch).
- `child_outside_parent`: a context lies outside its parent by more than the measurement error (a worker
  went on with a task after the try had failed): recorded by nesting.py, which clips it to its parent.
- `contradictory_clock_bounds`: a host clock's causal pairs bound its offset from both sides in ways no
  shift satisfies (skew.py leaves it uncorrected, with no estimate); on the run's root context, subject
  the clock, size how far the bounds cross, detail the pairs in contradiction with their provenance.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import ContextType
from ..sources.templates import quote_literal, rows_table

DEFAULT_THRESHOLD_MS = 1.0


def find(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType], threshold_ms: float) -> None:
    """Create table disagreements_out from obs_t, ctx_id and parent_cand (see contexts.reconcile)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE disagreements_out (
            trace_id VARCHAR, span_id VARCHAR, context_type VARCHAR, context_id VARCHAR, kind VARCHAR,
            subject VARCHAR, size_ms DOUBLE, detail JSON, ck UHUGEINT)
        """
    )
    _same_event_apart(con, threshold_ms)
    _impossible_order(con, types)
    _missing_in_source(con, types)
    _parent_conflicts(con)
    _incomplete(con, types)
    _bindings(con, types)
    _contradictory_clock_bounds(con)


def _insert(con: duckdb.DuckDBPyConnection, select: str) -> None:
    con.execute(
        f"""
        INSERT INTO disagreements_out
        SELECT i.trace_id, i.span_id, i.type, i.id, d.kind, d.subject, d.size_ms, d.detail, d.ck
        FROM ({select}) d JOIN ctx_id i USING (ck)
        """
    )


def _same_event_apart(con: duckdb.DuckDBPyConnection, threshold_ms: float) -> None:
    _insert(
        con,
        f"""
        -- the k-th occurrence of an event in one source is compared with the k-th in the others (a task
        -- is pending once per try)
        SELECT ck, 'same_event_apart' AS kind, event AS subject, (max(t) - min(t)) / 1e6 AS size_ms,
               json_object('occurrence', k, 'earliest', arg_min(src, t), 'latest', arg_max(src, t)) AS detail
        FROM (SELECT o.ck, o.event, o.t, o.converter || ':' || o.source || ':' || o.line AS src, o.converter,
                     row_number() OVER (PARTITION BY o.ck, o.event, o.converter ORDER BY o.t, o.source, o.line) AS k
              FROM obs_t o
              -- only where some two occurrences lie that far apart at all: few contexts, cheap to pair up
              SEMI JOIN (SELECT ck, event FROM obs_t WHERE event IS NOT NULL AND t IS NOT NULL GROUP BY ALL
                         HAVING count(DISTINCT converter) > 1 AND (max(t) - min(t)) / 1e6 > {float(threshold_ms)}
                        ) c ON c.ck = o.ck AND c.event = o.event
              WHERE o.t IS NOT NULL)
        GROUP BY ck, event, k
        HAVING count(DISTINCT converter) > 1 AND (max(t) - min(t)) / 1e6 > {float(threshold_ms)}
        """,
    )


def _impossible_order(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    rows = [(t.name, rank, ev) for t in types.values() for rank, evs in enumerate(t.order) for ev in evs]
    if not rows:
        return
    rows_table(con, "event_rank", "type VARCHAR, rank INTEGER, event VARCHAR", rows)
    _insert(
        con,
        """
        WITH first_seen AS (
            SELECT o.ck, r.rank, min(o.t) AS t,
                   arg_min(o.event || ' (' || o.converter || ')', o.t) AS what
            FROM obs_t o JOIN event_rank r ON r.type = o.context_type AND r.event = o.event
            WHERE o.t IS NOT NULL GROUP BY ALL
        )
        SELECT a.ck, 'impossible_order' AS kind, a.what || ' after ' || b.what AS subject,
               (a.t - b.t) / 1e6 AS size_ms, json_object('expected_first', a.what, 'seen_first', b.what) AS detail
        FROM first_seen a JOIN first_seen b USING (ck)
        WHERE a.rank < b.rank AND a.t > b.t
        """,
    )


def _missing_in_source(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    """A source that describes contexts of a type in a run is expected to describe all of them, unless its
    definition says which ones (`[describes.TYPE]`: `expected = false`, or only those `having` a chain of
    children, such as monitoring.db's executors, known only from their blocks)."""
    expectations = [e for t in types.values() for e in t.described_by]
    rows_table(con, "source_expectation", "converter VARCHAR, type VARCHAR, expected BOOLEAN, chained BOOLEAN",
               [(e.source, e.context_type, e.expected, bool(e.having)) for e in expectations])
    # the contexts each `having` chain holds for: children of the first type (claimed by any source), which
    # have children of the next type, …
    con.execute("CREATE OR REPLACE TEMP TABLE source_expected_ctx (converter VARCHAR, ck UHUGEINT)")
    for e in expectations:
        chain = ""
        for level, child_type in reversed(list(enumerate(e.having))):
            below = f" AND p{level}.ck IN ({chain})" if chain else ""
            t = quote_literal(child_type)
            chain = f"SELECT p{level}.pk FROM parent_cand p{level} WHERE p{level}.type = {t}{below}"
        if chain:
            con.execute(f"INSERT INTO source_expected_ctx SELECT DISTINCT {quote_literal(e.source)}, pk FROM ({chain})")
    _insert(
        con,
        """
        WITH seen AS (SELECT DISTINCT ck, run, context_type AS type, converter FROM obs_t),
        describes AS (SELECT DISTINCT run, type, converter FROM seen),
        contexts AS (SELECT DISTINCT ck, run, type FROM seen)
        SELECT c.ck, 'missing_in_source' AS kind, d.converter AS subject, NULL AS size_ms,
               json_object('missing_from', d.converter) AS detail
        FROM contexts c JOIN describes d USING (run, type)
        LEFT JOIN seen s ON s.ck = c.ck AND s.converter = d.converter
        LEFT JOIN source_expectation x ON x.converter = d.converter AND x.type = c.type
        WHERE s.converter IS NULL AND coalesce(x.expected, true)
          AND (NOT coalesce(x.chained, false)
               OR EXISTS (SELECT 1 FROM source_expected_ctx y WHERE y.converter = d.converter AND y.ck = c.ck))
        """,
    )


def _parent_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    _insert(
        con,
        """
        SELECT ck, 'parent_conflict' AS kind, ptype AS subject, NULL AS size_ms,
               json_object('claimed_by', list_sort(list(ptype || ':' || pid))) AS detail
        FROM parent_cand GROUP BY ck, ptype HAVING count(DISTINCT pid) > 1
        """,
    )


def _incomplete(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    rows = [(t.name, ev) for t in types.values() for ev in t.terminal]
    if not rows:
        return
    rows_table(con, "terminal_event", "type VARCHAR, event VARCHAR", rows)
    typed = ", ".join(quote_literal(t) for t in {r[0] for r in rows})
    _insert(
        con,
        f"""
        SELECT o.ck, 'incomplete' AS kind, 'no terminal event' AS subject, NULL AS size_ms,
               json_object('last_event', arg_max(o.event, o.t)) AS detail
        FROM obs_t o LEFT JOIN terminal_event te ON te.type = o.context_type AND te.event = o.event
        WHERE o.context_type IN ({typed})
        GROUP BY o.ck HAVING count(te.event) = 0
        """,
    )


def _bindings(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    """The 1:1 and 1:n relations the context types assume, checked against the data."""
    once = [(t.name, ev) for t in types.values() for ev in t.once]
    if once:
        rows_table(con, "once_event", "type VARCHAR, event VARCHAR", once)
        _insert(
            con,
            """
            -- the repeated ones first, with aggregates that spill (a list per event of every context does
            -- not at 10^6 tasks); their lines only then
            WITH once AS (
                SELECT o.ck, o.event, o.converter, o.t, o.source, o.line
                FROM obs_t o SEMI JOIN once_event x ON x.type = o.context_type AND x.event = o.event
                WHERE o.t IS NOT NULL
            ), repeated AS (
                SELECT ck, event, converter FROM once GROUP BY ALL HAVING count(*) > 1
            )
            SELECT o.ck, 'repeated_event' AS kind, o.event || ' (' || o.converter || ')' AS subject,
                   (max(o.t) - min(o.t)) / 1e6 AS size_ms,
                   json_object('times', count(*), 'lines', list_sort(list(o.source || ':' || o.line))) AS detail
            FROM once o SEMI JOIN repeated r USING (ck, event, converter)
            GROUP BY o.ck, o.event, o.converter
            """,
        )
    unique = [(t.name, k) for t in types.values() for k in t.unique]
    if unique:
        rows_table(con, "unique_attribute", "type VARCHAR, k VARCHAR", unique)
        _insert(
            con,
            """
            SELECT kv.ck, 'conflicting_values' AS kind, kv.k AS subject, NULL AS size_ms,
                   json_object('values', list_sort(list(DISTINCT kv.v::VARCHAR))) AS detail
            FROM kv JOIN ctx c USING (ck) SEMI JOIN unique_attribute u ON u.type = c.type AND u.k = kv.k
            GROUP BY kv.ck, kv.k HAVING count(DISTINCT kv.v) > 1
            """,
        )
    limits = [(t.name, child, n) for t in types.values() for child, n in t.max_children.items()]
    if limits:
        rows_table(con, "child_limit", "type VARCHAR, child VARCHAR, n INTEGER", limits)
        _insert(
            con,
            """
            SELECT p.pk AS ck, 'too_many_children' AS kind, p.type AS subject, NULL AS size_ms,
                   json_object('children', list_sort(list(DISTINCT p.type || ':' || p.id)), 'most', any_value(l.n))
                     AS detail
            FROM parent_cand p JOIN ctx parent ON parent.ck = p.pk
            JOIN child_limit l ON l.type = parent.type AND l.child = p.type
            GROUP BY p.pk, p.type HAVING count(DISTINCT p.ck) > any_value(l.n)
            """,
        )


def _contradictory_clock_bounds(con: duckdb.DuckDBPyConnection) -> None:
    """From skew.measure's clock_conflict: one row per host clock whose bounds contradict, on the run's root."""
    _insert(
        con,
        """
        SELECT p.ck, 'contradictory_clock_bounds' AS kind, c.clock AS subject, c.size_ms,
               json_merge_patch(json_object('clock', c.clock), c.detail) AS detail
        FROM clock_conflict c JOIN ctx x ON x.run = c.run JOIN ctx_parent p ON p.ck = x.ck AND p.pk IS NULL
        """,
    )


def child_outside_parent(con: duckdb.DuckDBPyConnection) -> None:
    """`child_outside_parent` rows from nest_clipped (made by nesting.nest, which runs after the bounds)."""
    _insert(
        con,
        """
        SELECT ck, 'child_outside_parent' AS kind, subject, greatest(early, late) / 1e6 AS size_ms, detail
        FROM nest_clipped
        """,
    )
