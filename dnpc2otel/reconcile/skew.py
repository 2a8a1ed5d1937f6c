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
    if correct:
        con.execute(
            """
            UPDATE obs_t SET t = t - CAST(round(c.skew_ms * 1e6) AS BIGINT)
            FROM clocks_out c
            WHERE c.run = obs_t.run AND c.clock = obs_t.clock AND c.consistent AND c.skew_ms <> 0
            """
        )


# a context and its ancestors up to this many levels: dispatch → receive spans executor task → worker execution,
# result → return spans worker execution → try (c0 … c3 as joins, not a recursive CTE, so that DuckDB can spill
# them at 10^6 tasks)
ANCESTOR_LEVELS = 3


def _chain_sql() -> str:
    """CTEs c0 … cN and chain: (d, a) for a context d and each ancestor a within ANCESTOR_LEVELS, with whether
    a context strictly between the two failed (mid), the ancestor itself failed (top), and whether a claim on
    the way is doubtful."""
    ctes = ["""c0 AS (
            SELECT e.ck AS d, e.ck AS a, false AS mid, f.ck IS NOT NULL AS top, false AS doubtful
            FROM (SELECT DISTINCT ck FROM causal_end) e LEFT JOIN failed f USING (ck)
        )"""]
    for n in range(1, ANCESTOR_LEVELS + 1):
        mid = "false" if n == 1 else "c.mid OR c.top"
        doubtful = "p.doubtful" if n == 1 else "c.doubtful OR p.doubtful"
        ctes.append(f"""c{n} AS (
            SELECT c.d, p.pk AS a, {mid} AS mid, f.ck IS NOT NULL AS top, {doubtful} AS doubtful
            FROM c{n - 1} c JOIN claim p ON p.ck = c.a LEFT JOIN failed f ON f.ck = p.pk
        )""")
    union = " UNION ALL ".join(f"SELECT * FROM c{n}" for n in range(ANCESTOR_LEVELS + 1))
    return ", ".join([*ctes, f"chain AS ({union})"])


def _causal_pairs(con: duckdb.DuckDBPyConnection, ref: str) -> None:
    """Table causal_gap: every pair of causal events of related contexts with the reference clock on one side
    and another clock on the other (only those bound an offset), the resolution of its stamps, why it is left
    out (NULL: it is used), and its provenance as keys: at 10^6 tasks there are millions of pairs, and only the
    few a contradiction lists are ever spelt out (`_conflicts`)."""
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
                    "b_source VARCHAR, b_line BIGINT, a_ck UHUGEINT, a_event VARCHAR, a_source VARCHAR, a_line BIGINT)")
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE causal_gap AS
        WITH resolution AS (  -- the coarsest grid all of a source's stamps lie on (s, ms, µs, ns)
            SELECT run, source,
                   CASE WHEN bool_and(t % 1000000000 = 0) THEN 1000000000 WHEN bool_and(t % 1000000 = 0) THEN 1000000
                        WHEN bool_and(t % 1000 = 0) THEN 1000 ELSE 1 END AS res
            FROM causal_end GROUP BY ALL
        ), stamped AS (
            SELECT e.*, r.res FROM causal_end e JOIN resolution r USING (run, source)
        ), before AS (      -- the earliest occurrence: every 'after' follows it (ties: the first source line)
            SELECT run, ck, type, event, clock, min(t) AS t,
                   arg_min({{'source': source, 'line': line, 'res': res}}, (t, source, line)) AS first
            FROM stamped SEMI JOIN causal_rule r ON r.before_type = stamped.type AND r.before_event = stamped.event
            GROUP BY run, ck, type, event, clock
        ), after AS (
            SELECT * FROM stamped
            SEMI JOIN causal_rule r ON r.after_type = stamped.type AND r.after_event = stamped.event
        ), failed AS (
            SELECT DISTINCT ck FROM obs_t
            WHERE attributes LIKE '%otel.status_code%' AND upper(json_extract_string(attributes, '{status}')) = 'ERROR'
        ), inferred AS (    -- parent claims only ever made by order, never stated by a source
            SELECT ck, rk AS pk FROM obs_t WHERE relation = 'child_of' AND rk <> ck GROUP BY ck, rk
            HAVING bool_and(coalesce(json_extract_string(attributes, '{binding}'), '') = 'inferred')
        ), claim AS (
            SELECT p.ck, p.pk, p.conflict OR i.ck IS NOT NULL AS doubtful
            FROM parent_rank p LEFT JOIN inferred i USING (ck, pk)
        ), {_chain_sql()}, related AS (
            -- one clean path is enough to relate two contexts; a failure on any path taints them
            SELECT c.d, c.a, bool_or(c.mid) AS mid, bool_or(c.top) AS top, any_value(f.ck) IS NOT NULL AS bottom,
                   bool_and(c.doubtful) AS doubtful
            FROM chain c LEFT JOIN failed f ON f.ck = c.d GROUP BY c.d, c.a
        ), within AS (      -- x (the after event's context) and y are the same, or one is the other's ancestor;
                            -- failed: x failed or, when x is the ancestor, any context on the way up to it
            SELECT d AS x, a AS y, bottom AS failed, doubtful FROM related
            UNION ALL SELECT a, d, top OR mid OR bottom, doubtful FROM related WHERE a <> d
        )
        SELECT a.run, b.clock AS before_clock, a.clock AS after_clock, a.t - b.t AS gap,
               b.first.res + a.res AS tolerance,
               CASE WHEN w.doubtful THEN 'ambiguous or inferred binding' WHEN w.failed THEN 'failed attempt' END
                 AS excluded,
               b.ck AS b_ck, b.event AS b_event, b.first.source AS b_source, b.first.line AS b_line,
               a.ck AS a_ck, a.event AS a_event, a.source AS a_source, a.line AS a_line
        FROM causal_rule r
        JOIN after a ON a.type = r.after_type AND a.event = r.after_event
        JOIN within w ON w.x = a.ck
        JOIN before b ON b.ck = w.y AND b.type = r.before_type AND b.event = r.before_event
        WHERE a.clock <> b.clock AND (a.clock = {ref} OR b.clock = {ref})
        """
    )


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
                                                    b.b_ck, b.a_ck, b.a_source, b.a_line) AS k
            FROM clock_bound b JOIN bad USING (run, clock)
            WHERE b.excluded IS NULL AND ((b.side = 'lower' AND b.bound - b.tolerance > bad.upper_w)
                                          OR (b.side = 'upper' AND b.bound + b.tolerance < bad.lower_w))
        ), listed AS (      -- only the pairs a disagreement row shows are spelt out
            SELECT c.run, c.clock, c.side, c.k,
                   json_object('before', bx.type || ':' || bx.id || ' ' || c.b_event,
                               'before_source', c.b_source || ':' || c.b_line,
                               'after', ax.type || ':' || ax.id || ' ' || c.a_event,
                               'after_source', c.a_source || ':' || c.a_line,
                               'gap_ms', CASE c.side WHEN 'upper' THEN c.bound ELSE -c.bound END / 1e6) AS pair
            FROM crossing c JOIN ctx bx ON bx.ck = c.b_ck JOIN ctx ax ON ax.ck = c.a_ck
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
