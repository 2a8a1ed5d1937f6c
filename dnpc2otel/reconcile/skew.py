"""Clock skew between hosts, measured from events whose order is physical.

Definitions declare causal pairs (`[[causality]] before = "executor_task.dispatched"`, `after =
"worker_execution.received"`): events of one context, or of a context and an ancestor of it (up to three
levels), where the `after` event cannot truly happen first. Each pair whose two events were stamped by
different clocks bounds the offset θ of one clock against the other (observed = true + θ):

    θ_after_clock − θ_before_clock ≤ t_after − t_before

Against the reference clock (the system's `reference_clock`; for Parsl the DataFlowKernel's host, `dfk`),
pairs in one direction (dispatch → receive) give an upper bound of a host's θ, pairs in the other
(completed → result back) a lower bound.
When [lower, upper] holds 0 the clocks agree as far as the data can tell; otherwise the estimate is the
bound nearest 0: the smallest shift that restores every causal order (its error is at most the shortest
message delay in that direction). Bounds that cross (lower > upper: no shift satisfies every pair)
give the middle, and are worth a look.
The result is kept in table `clocks`; with correction on, the host's times are shifted by the estimate
before spans are bounded.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import Causality
from ..sources.templates import quote_literal, rows_table


def measure(con: duckdb.DuckDBPyConnection, pairs: list[Causality], correct: bool, reference_clock: str) -> None:
    """Create table clocks_out(run, clock, …) from obs_t and parent_cand; shift obs_t if `correct`."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE clocks_out (
            run VARCHAR, clock VARCHAR, reference VARCHAR, pairs BIGINT, lower_ms DOUBLE, upper_ms DOUBLE,
            skew_ms DOUBLE, corrected BOOLEAN)
        """
    )
    if not pairs:
        return
    rows_table(con, "causal_rule", "before_type VARCHAR, before_event VARCHAR, after_type VARCHAR, after_event VARCHAR",
               [(p.before_type, p.before_event, p.after_type, p.after_event) for p in pairs])
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE causal_gap AS
        WITH before AS (   -- the earliest occurrence: every 'after' follows it
            SELECT o.run, o.ck, o.context_type AS type, o.event, o.clock, min(o.t) AS t
            FROM obs_t o JOIN (SELECT DISTINCT before_type, before_event FROM causal_rule) r
                 ON r.before_type = o.context_type AND r.before_event = o.event
            WHERE o.t IS NOT NULL GROUP BY ALL
        ), after AS (
            SELECT o.run, o.ck, o.context_type AS type, o.event, o.clock, o.t
            FROM obs_t o JOIN (SELECT DISTINCT after_type, after_event FROM causal_rule) r
                 ON r.after_type = o.context_type AND r.after_event = o.event
            WHERE o.t IS NOT NULL
        ), up1 AS (SELECT DISTINCT ck, pk FROM parent_cand),
        ancestry AS (      -- a context and its ancestors up to three levels, by any parent claim
            SELECT ck AS child, ck AS parent FROM (SELECT DISTINCT ck FROM obs_t)
            UNION SELECT ck, pk FROM up1
            UNION SELECT a.ck, b.pk FROM up1 a JOIN up1 b ON b.ck = a.pk
            UNION SELECT a.ck, c.pk FROM up1 a JOIN up1 b ON b.ck = a.pk JOIN up1 c ON c.ck = b.pk
        ), within AS (     -- the two events' contexts are the same, or one is an ancestor of the other
            SELECT child AS a, parent AS b FROM ancestry UNION SELECT parent, child FROM ancestry
        )
        SELECT a.run, b.clock AS before_clock, a.clock AS after_clock, a.t - b.t AS gap
        FROM causal_rule r
        JOIN after a ON a.type = r.after_type AND a.event = r.after_event
        JOIN within w ON w.a = a.ck
        JOIN before b ON b.ck = w.b AND b.type = r.before_type AND b.event = r.before_event
        WHERE a.clock <> b.clock
        """
    )
    ref = quote_literal(reference_clock)
    con.execute(
        f"""
        INSERT INTO clocks_out
        WITH bounds AS (
            SELECT run, after_clock AS clock, NULL::BIGINT AS lower, min(gap) AS upper, count(*) AS n
            FROM causal_gap WHERE before_clock = {ref} GROUP BY ALL
            UNION ALL
            SELECT run, before_clock, max(-gap), NULL, count(*)
            FROM causal_gap WHERE after_clock = {ref} GROUP BY ALL
        ), host AS (
            SELECT run, clock, max(lower) AS lower, min(upper) AS upper, sum(n) AS n FROM bounds GROUP BY ALL
        )
        SELECT run, clock, {ref}, n, lower / 1e6, upper / 1e6,
               -- the smallest shift that puts every pair back in causal order: queueing makes the delays
               -- of the two directions too unequal for the interval's middle to be a fair estimate
               CASE WHEN coalesce(lower, 0) <= 0 AND coalesce(upper, 0) >= 0 THEN 0
                    WHEN lower IS NOT NULL AND upper IS NOT NULL AND lower > upper THEN (lower + upper) / 2e6
                    WHEN lower > 0 THEN lower / 1e6
                    ELSE upper / 1e6 END,
               {'true' if correct else 'false'}
        FROM host
        """
    )
    if correct:
        con.execute(
            """
            UPDATE obs_t SET t = t - CAST(round(c.skew_ms * 1e6) AS BIGINT)
            FROM clocks_out c WHERE c.run = obs_t.run AND c.clock = obs_t.clock AND c.skew_ms <> 0
            """
        )
