"""Clock skew between hosts, measured from events whose order is physical — and never invented.

Definitions declare causal pairs (`[[causality]] before = "executor_task.dispatched"`, `after =
"worker_execution.received"`): events of one context, or of a context and an ancestor of it (up to three
levels), where the `after` event cannot truly happen first. Each pair whose two events were stamped by
different clocks bounds the offset θ of one clock against the other (observed = true + θ):

    θ_after_clock − θ_before_clock ≤ t_after − t_before

Against the reference clock (the system's `reference_clock`; for Parsl the DataFlowKernel's host, `dfk`),
pairs in one direction (dispatch → receive) give an upper bound of a host's θ, pairs in the other
(completed → result back) a lower bound.

A pair is only as good as the claim that its two events are of one execution, so some are left out
(counted in `clocks.excluded_pairs`):
- through a parent claim that is ambiguous (two claimants of one type: an id reused) or inferred from
  order (`dnpc.binding = inferred`): the events may be of two different executions;
- where the `after` event's context failed (`otel.status_code = ERROR`) or, when it is the ancestor (a result
  travelling up), any context on the way up to it: a failure travels up a hierarchy and may be what brought
  the `after` event about, not the `before` one — a lost manager's task is failed by the DFK while its
  worker still runs it, and the worker's "completed" comes after the DFK's "returned". (A dispatch →
  receive pair stays when the task failed later on: its failure cannot have caused the receiving.)

Each time is only as fine as its source's stamps (a log to the ms, to the second), so each pair's bound
is widened by the resolution of its two sources before bounds are compared.
When the widened [lower, upper] holds 0 the clocks agree as far as the data can tell: the estimate is 0.
When it lies off 0 the estimate is the raw bound nearest 0: the smallest shift that restores every causal
order (its error is at most the shortest message delay in that direction). When the bounds contradict
each other (lower > upper even so: no shift satisfies every pair) nothing is estimated: the clock is
`consistent = false` with `skew_ms` NULL, is never corrected, and the pairs in contradiction are listed by
a `contradictory_clock_bounds` disagreement (table clock_conflict here; disagreements.py writes it).
The result is kept in table `clocks`; with correction on, a consistent host's times are shifted by the
estimate before spans are bounded.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import Causality
from ..sources.templates import json_member_path, quote_literal, rows_table

# how many of the pairs on each side of a contradiction its disagreement row lists
LISTED_PAIRS = 5


def measure(con: duckdb.DuckDBPyConnection, pairs: list[Causality], correct: bool, reference_clock: str) -> None:
    """Create tables clocks_out(run, clock, …) and clock_conflict(run, clock, size_ms, detail) from obs_t
    and parent_rank; shift obs_t if `correct`."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE clocks_out (
            run VARCHAR, clock VARCHAR, reference VARCHAR, pairs BIGINT, excluded_pairs BIGINT,
            lower_ms DOUBLE, upper_ms DOUBLE, resolution_ms DOUBLE, consistent BOOLEAN, skew_ms DOUBLE,
            corrected BOOLEAN)
        """
    )
    con.execute("CREATE OR REPLACE TEMP TABLE clock_conflict (run VARCHAR, clock VARCHAR, size_ms DOUBLE, detail JSON)")
    if not pairs:
        return
    rows_table(con, "causal_rule", "before_type VARCHAR, before_event VARCHAR, after_type VARCHAR, after_event VARCHAR",
               [(p.before_type, p.before_event, p.after_type, p.after_event) for p in pairs])
    ref = quote_literal(reference_clock)
    _causal_pairs(con, ref)
    _clock_bounds(con, ref)
    _estimate(con, ref, correct)
    _conflicts(con)
    for t in ("causal_source", "causal_end", "causal_gap", "clock_bound"):  # millions of rows at 10^6 tasks
        con.execute(f"DROP TABLE {t}")
    if correct:
        con.execute(
            """
            UPDATE obs_t SET t = t - CAST(round(c.skew_ms * 1e6) AS BIGINT)
            FROM clocks_out c
            WHERE c.run = obs_t.run AND c.clock = obs_t.clock AND c.consistent AND c.skew_ms <> 0
            """
        )


# a context and its ancestors up to this many levels: dispatch → receive spans executor task → worker execution,
# result → return spans worker execution → try
ANCESTOR_LEVELS = 3
# scratch tables of _causal_pairs, dropped once causal_gap is made
_SCRATCH = ("causal_before", "causal_after", "causal_failed", "causal_claim", "causal_chain", "causal_within")


def _each(con: duckdb.DuckDBPyConnection, *statements: str) -> None:
    # one statement a call: DuckDB runs a multi-statement string's plans with less room to spill
    for sql in statements:
        con.execute(sql)


def _causal_pairs(con: duckdb.DuckDBPyConnection, ref: str) -> None:
    """Table causal_gap: every pair of causal events of related contexts with the reference clock on one side
    and another clock on the other (only those bound an offset), the resolution of its stamps, why it is left
    out (NULL: it is used), and its provenance as keys: at 10^6 tasks there are millions of pairs, and only the
    few a contradiction lists are ever spelt out (`_conflicts`). Each step is a table of its own, not a CTE of
    one statement, so that DuckDB can spill each within the memory limit."""
    status, binding = json_member_path("otel.status_code"), json_member_path("dnpc.binding")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE causal_end AS   -- the observations of the events named by some causal pair
        SELECT o.run, o.ck, o.context_type AS type, o.event, o.clock, o.t, o.source, o.line
        FROM obs_t o
        SEMI JOIN (SELECT before_type AS type, before_event AS event FROM causal_rule
                   UNION SELECT after_type, after_event FROM causal_rule) r
             ON r.type = o.context_type AND r.event = o.event
        WHERE o.t IS NOT NULL
        """
    )
    row = con.execute(f"SELECT count(DISTINCT clock), count(*) FILTER (WHERE clock = {ref}) FROM causal_end").fetchone()
    if not row or row[0] < 2 or not row[1]:  # one clock, or none is the reference: nothing to measure
        con.execute("CREATE OR REPLACE TEMP TABLE causal_gap (run VARCHAR, before_clock VARCHAR, after_clock VARCHAR, "
                    "gap BIGINT, tolerance BIGINT, excluded VARCHAR, b_ck UHUGEINT, b_event VARCHAR, "
                    "b_sid BIGINT, b_line BIGINT, a_ck UHUGEINT, a_event VARCHAR, a_sid BIGINT, a_line BIGINT)")
        con.execute("CREATE OR REPLACE TEMP TABLE causal_source (run VARCHAR, source VARCHAR, res BIGINT, sid BIGINT)")
        return
    _each(
        con,
        """
        -- each source: the coarsest grid all its stamps lie on (s, ms, µs, ns), and an integer id (sid) for
        -- the steps below: aggregates over fixed-size values spill, over strings not always
        CREATE OR REPLACE TEMP TABLE causal_source AS
        SELECT *, row_number() OVER (ORDER BY run, source) AS sid FROM (
            SELECT run, source,
                   CASE WHEN bool_and(t % 1000000000 = 0) THEN 1000000000 WHEN bool_and(t % 1000000 = 0) THEN 1000000
                        WHEN bool_and(t % 1000 = 0) THEN 1000 ELSE 1 END AS res
            FROM causal_end GROUP BY ALL)
        """,
        """
        CREATE OR REPLACE TEMP TABLE causal_before AS  -- the earliest occurrence: every 'after' follows it
        SELECT e.run, e.ck, e.type, e.event, e.clock, min(e.t) AS t,
               arg_min({'sid': r.sid, 'line': e.line, 'res': r.res}, (e.t, r.sid, e.line)) AS first
        FROM causal_end e JOIN causal_source r USING (run, source)
        SEMI JOIN causal_rule c ON c.before_type = e.type AND c.before_event = e.event
        GROUP BY e.run, e.ck, e.type, e.event, e.clock
        """,
        """
        CREATE OR REPLACE TEMP TABLE causal_after AS
        SELECT e.* EXCLUDE (source), r.sid, r.res FROM causal_end e JOIN causal_source r USING (run, source)
        SEMI JOIN causal_rule c ON c.after_type = e.type AND c.after_event = e.event
        """,
    )
    _each(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE causal_failed AS
        SELECT DISTINCT ck FROM obs_t
        WHERE attributes LIKE '%otel.status_code%' AND upper(json_extract_string(attributes, '{status}')) = 'ERROR'
        """,
        f"""
        CREATE OR REPLACE TEMP TABLE causal_claim AS
        WITH inferred AS (  -- parent claims only ever made by order, never stated by a source
            SELECT ck, rk AS pk FROM obs_t WHERE relation = 'child_of' AND rk <> ck GROUP BY ck, rk
            HAVING bool_and(coalesce(json_extract_string(attributes, '{binding}'), '') = 'inferred')
        )
        SELECT p.ck, p.pk, p.conflict OR i.ck IS NOT NULL AS doubtful
        FROM parent_rank p LEFT JOIN inferred i USING (ck, pk)
        """,
        """
        -- a context d and its ancestors a, level by level (joins, not a recursive CTE, so that DuckDB can spill
        -- them at 10^6 tasks); mid: a context strictly between the two failed; top: the ancestor itself failed
        CREATE OR REPLACE TEMP TABLE causal_chain AS
        SELECT 0 AS level, e.ck AS d, e.ck AS a, false AS mid, f.ck IS NOT NULL AS top, false AS doubtful
        FROM (SELECT DISTINCT ck FROM causal_end) e LEFT JOIN causal_failed f USING (ck)
        """,
    )
    for n in range(1, ANCESTOR_LEVELS + 1):
        con.execute(
            f"""
            INSERT INTO causal_chain
            SELECT {n}, c.d, p.pk, c.level > 0 AND (c.mid OR c.top), f.ck IS NOT NULL, c.doubtful OR p.doubtful
            FROM causal_chain c JOIN causal_claim p ON p.ck = c.a LEFT JOIN causal_failed f ON f.ck = p.pk
            WHERE c.level = {n - 1}
            """
        )
    _each(
        con,
        """
        CREATE OR REPLACE TEMP TABLE causal_within AS
        -- x (the after event's context) and y are the same, or one is the other's ancestor; one clean path is
        -- enough to relate two contexts, a failure on any path taints them; failed: x failed or, when x is the
        -- ancestor, any context on the way up to it
        WITH related AS (
            SELECT c.d, c.a, bool_or(c.mid) AS mid, bool_or(c.top) AS top, any_value(f.ck) IS NOT NULL AS bottom,
                   bool_and(c.doubtful) AS doubtful
            FROM causal_chain c LEFT JOIN causal_failed f ON f.ck = c.d GROUP BY c.d, c.a
        )
        SELECT d AS x, a AS y, bottom AS failed, doubtful FROM related
        UNION ALL SELECT a, d, top OR mid OR bottom, doubtful FROM related WHERE a <> d
        """,
        f"""
        CREATE OR REPLACE TEMP TABLE causal_gap AS
        SELECT a.run, b.clock AS before_clock, a.clock AS after_clock, a.t - b.t AS gap,
               b.first.res + a.res AS tolerance,
               CASE WHEN w.doubtful THEN 'ambiguous or inferred binding' WHEN w.failed THEN 'failed attempt' END
                 AS excluded,
               b.ck AS b_ck, b.event AS b_event, b.first.sid AS b_sid, b.first.line AS b_line,
               a.ck AS a_ck, a.event AS a_event, a.sid AS a_sid, a.line AS a_line
        FROM causal_rule r
        JOIN causal_after a ON a.type = r.after_type AND a.event = r.after_event
        JOIN causal_within w ON w.x = a.ck
        JOIN causal_before b ON b.ck = w.y AND b.type = r.before_type AND b.event = r.before_event
        WHERE a.clock <> b.clock AND (a.clock = {ref} OR b.clock = {ref})
        """,
    )
    for t in _SCRATCH:
        con.execute(f"DROP TABLE {t}")


def _clock_bounds(con: duckdb.DuckDBPyConnection, ref: str) -> None:
    """Table clock_bound: each pair as a bound of one host clock's offset against the reference (ns)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE clock_bound AS
        SELECT run, after_clock AS clock, 'upper' AS side, gap AS bound, tolerance, excluded, * EXCLUDE
               (run, before_clock, after_clock, gap, tolerance, excluded)
        FROM causal_gap WHERE before_clock = {ref}
        UNION ALL
        SELECT run, before_clock, 'lower', -gap, tolerance, excluded, * EXCLUDE
               (run, before_clock, after_clock, gap, tolerance, excluded)
        FROM causal_gap WHERE after_clock = {ref}
        """
    )


def _estimate(con: duckdb.DuckDBPyConnection, ref: str, correct: bool) -> None:
    con.execute(
        f"""
        INSERT INTO clocks_out
        WITH host AS (
            SELECT run, clock,
                   max(bound) FILTER (WHERE side = 'lower') AS lower,
                   min(bound) FILTER (WHERE side = 'upper') AS upper,
                   -- each bound widened by its pair's stamp resolution: what the data can exclude for sure
                   max(bound - tolerance) FILTER (WHERE side = 'lower') AS lower_w,
                   min(bound + tolerance) FILTER (WHERE side = 'upper') AS upper_w,
                   max(tolerance) AS resolution, count(*) AS n
            FROM clock_bound WHERE excluded IS NULL GROUP BY ALL
        ), excluded AS (
            SELECT run, clock, count(*) AS n FROM clock_bound WHERE excluded IS NOT NULL GROUP BY ALL
        ), judged AS (
            SELECT coalesce(h.run, x.run) AS run, coalesce(h.clock, x.clock) AS clock, coalesce(h.n, 0) AS n,
                   coalesce(x.n, 0) AS n_excluded, h.lower, h.upper, h.lower_w, h.upper_w, h.resolution,
                   h.lower_w IS NULL OR h.upper_w IS NULL OR h.lower_w <= h.upper_w AS consistent
            FROM host h FULL JOIN excluded x USING (run, clock)
        )
        SELECT run, clock, {ref}, n, n_excluded, lower / 1e6, upper / 1e6, resolution / 1e6,
               -- no pair left: nothing is known, nothing contradicts
               consistent,
               -- the smallest shift that puts every pair back in causal order: queueing makes the delays
               -- of the two directions too unequal for the interval's middle to be a fair estimate
               CASE WHEN n = 0 OR NOT consistent THEN NULL
                    WHEN coalesce(lower_w, 0) <= 0 AND coalesce(upper_w, 0) >= 0 THEN 0
                    WHEN lower > upper THEN (lower + upper) / 2e6   -- crossing, but within the resolution
                    WHEN lower_w > 0 THEN lower / 1e6
                    ELSE upper / 1e6 END,
               {'true' if correct else 'false'} AND n > 0 AND consistent
        FROM judged
        """
    )


def _conflicts(con: duckdb.DuckDBPyConnection) -> None:
    """Table clock_conflict: for each clock whose bounds contradict, the pairs on each side that no shift
    reconciles with the other side (the ones that cross it, farthest first)."""
    con.execute(
        f"""
        INSERT INTO clock_conflict
        WITH bad AS (
            SELECT o.run, o.clock, o.lower_ms, o.upper_ms,
                   max(b.bound - b.tolerance) FILTER (WHERE b.side = 'lower') AS lower_w,
                   min(b.bound + b.tolerance) FILTER (WHERE b.side = 'upper') AS upper_w
            FROM clocks_out o JOIN clock_bound b USING (run, clock)
            WHERE NOT o.consistent AND b.excluded IS NULL GROUP BY ALL
        ), crossing AS (    -- a lower bound above every upper one could hold, an upper one below the lower
            SELECT b.*, row_number() OVER (PARTITION BY b.run, b.clock, b.side
                                           ORDER BY CASE b.side WHEN 'lower' THEN -b.bound ELSE b.bound END,
                                                    b.b_ck, b.a_ck, b.a_sid, b.a_line) AS k
            FROM clock_bound b JOIN bad USING (run, clock)
            WHERE b.excluded IS NULL AND ((b.side = 'lower' AND b.bound - b.tolerance > bad.upper_w)
                                          OR (b.side = 'upper' AND b.bound + b.tolerance < bad.lower_w))
        ), listed AS (      -- only the pairs a disagreement row shows are spelt out
            SELECT c.run, c.clock, c.side, c.k,
                   json_object('before', bx.type || ':' || bx.id || ' ' || c.b_event,
                               'before_source', bs.source || ':' || c.b_line,
                               'after', ax.type || ':' || ax.id || ' ' || c.a_event,
                               'after_source', as_.source || ':' || c.a_line,
                               'gap_ms', CASE c.side WHEN 'upper' THEN c.bound ELSE -c.bound END / 1e6) AS pair
            FROM crossing c JOIN ctx bx ON bx.ck = c.b_ck JOIN ctx ax ON ax.ck = c.a_ck
            JOIN causal_source bs ON bs.sid = c.b_sid JOIN causal_source as_ ON as_.sid = c.a_sid
            WHERE c.k <= {LISTED_PAIRS}
        )
        SELECT bad.run, bad.clock, bad.lower_ms - bad.upper_ms,
               json_object('lower_ms', bad.lower_ms, 'upper_ms', bad.upper_ms,
                           'lower_pairs', (SELECT list(c.pair ORDER BY c.k) FROM listed c WHERE c.run = bad.run
                                           AND c.clock = bad.clock AND c.side = 'lower'),
                           'upper_pairs', (SELECT list(c.pair ORDER BY c.k) FROM listed c WHERE c.run = bad.run
                                           AND c.clock = bad.clock AND c.side = 'upper'),
                           'crossing_pairs', (SELECT count(*) FROM crossing c
                                              WHERE c.run = bad.run AND c.clock = bad.clock))
        FROM bad
        """
    )
