"""Bounds: when each context starts and ends.

Each source bounds a context by the earliest/latest of its events (events a converter marks bounds=false —
monitoring's status echoes, resource samples — and observations without an event count only when there is
nothing else). The span takes the bounds of the most trusted source (lowest converter priority) and records
the others' spread; an incomplete context lasts until its last sign of life, whichever source saw it; types
that `covers_children` (and the root) widen to their children, those of any parent claim; a context with no
time of its own takes its children's, else an instant at its parent's start. The most trusted source's
times stand even where they make the context one instant (a dependency-failed try in monitoring.db: one row,
its end): nesting.py makes such an instant a 1 ns span, and puts every span inside its parent.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import System
from ..sources.templates import quote_literal

MAX_DEPTH = 10


def bound(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create source_bounds, chosen_bounds and ctx_bounds (needs ctx_parent, parent_cand, disagreements_out)."""
    # Each source's own bounds of each context: from its bounding events, else any event, else any time.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE source_bounds AS
        WITH tiers AS (
            SELECT ck, converter, min(priority) AS priority,
                   CASE WHEN bounds AND event IS NOT NULL THEN 0 WHEN event IS NOT NULL THEN 1 ELSE 2 END AS tier,
                   min(t) AS s, max(t) AS e
            FROM obs_t WHERE t IS NOT NULL GROUP BY ALL
        )
        SELECT * FROM tiers QUALIFY tier = min(tier) OVER (PARTITION BY ck)
        """
    )
    # The span follows the most trusted source that times the context (lowest converter priority);
    # how far the other sources' start and end lie from it is kept on the span.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE chosen_bounds AS
        -- the order of trust as one integer (priority, then converter name): arg_min over fixed-size values
        -- spills at 10^6 tasks, over a struct or a string not always
        WITH conv AS (
            SELECT converter, row_number() OVER (ORDER BY converter) AS cn
            FROM (SELECT DISTINCT converter FROM source_bounds)
        ), ranked AS (
            SELECT b.*, CAST(b.priority AS BIGINT) * 1048576 + c.cn AS trust, c.cn
            FROM source_bounds b JOIN conv c USING (converter)
        ), inc AS (
            SELECT i.ck, max(o.t) AS last_t
            FROM (SELECT DISTINCT ck FROM disagreements_out WHERE kind = 'incomplete') i
            JOIN obs_t o USING (ck) GROUP BY i.ck
        ), chosen AS (
            SELECT ck,
                   arg_min(s, trust) AS s,
                   -- an open (incomplete) context lasted until its last sign of life, whichever source saw it
                   -- (a resource sample or a status echo included: bounds=false says "not a transition", not
                   -- "dead")
                   CASE WHEN bool_or(inc.ck IS NOT NULL) THEN greatest(max(e), any_value(inc.last_t))
                        ELSE arg_min(e, trust) END AS e,
                   arg_min(cn, trust) AS cn, min(priority) AS priority,
                   count(*) AS n_sources,
                   (max(s) - min(s)) / 1e6 AS start_spread_ms, (max(e) - min(e)) / 1e6 AS end_spread_ms
            FROM ranked LEFT JOIN inc USING (ck)
            GROUP BY ck
        )
        SELECT c.* EXCLUDE (cn), conv.converter AS bounds_source FROM chosen c JOIN conv USING (cn)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_bounds AS
        SELECT c.ck, c.run, c.type, c.id, p.pk, p.orphan, b.s, b.e, b.s IS NULL AS untimed,
               coalesce(ct.covers, false) AS covers, b.bounds_source, b.n_sources, b.start_spread_ms,
               b.end_spread_ms,
               -- how trusted the source of the start and of the end is (its priority; nesting.py weighs them)
               b.priority AS s_prio, b.priority AS e_prio
        FROM ctx c
        JOIN ctx_parent p USING (ck)
        LEFT JOIN chosen_bounds b USING (ck)
        LEFT JOIN ctype ct ON ct.type = c.type
        """
    )
    # widen parents that cover their children (and parents with no time of their own), level by level
    for _ in range(MAX_DEPTH):
        changed = con.execute(
            f"""
            UPDATE ctx_bounds AS p SET s = least(coalesce(p.s, ch.s), ch.s), e = greatest(coalesce(p.e, ch.e), ch.e),
                   s_prio = CASE WHEN p.s IS NULL OR ch.s < p.s THEN ch.s_prio ELSE p.s_prio END,
                   e_prio = CASE WHEN p.e IS NULL OR ch.e > p.e THEN ch.e_prio ELSE p.e_prio END
            FROM (SELECT r.pk, min(c.s) AS s, max(c.e) AS e, arg_min(c.s_prio, c.s) AS s_prio,
                         arg_max(c.e_prio, c.e) AS e_prio
                  FROM (SELECT ck, pk FROM ctx_bounds UNION SELECT ck, pk FROM parent_cand) r
                  JOIN ctx_bounds c USING (ck) WHERE c.s IS NOT NULL GROUP BY r.pk) ch
            WHERE ch.pk = p.ck AND (p.covers OR p.untimed OR p.type = {quote_literal(system.root_context)})
              AND (p.s IS NULL OR ch.s < p.s OR ch.e > p.e)
            """
        ).fetchone()
        if not changed or changed[0] == 0:
            break
    # still untimed (no own time, no timed child): an instant at the parent's start (1 ns: nesting.py)
    for _ in range(MAX_DEPTH):
        changed = con.execute(
            """
            UPDATE ctx_bounds AS c SET s = p.s, e = p.s
            FROM ctx_bounds p
            WHERE c.s IS NULL AND p.ck = c.pk AND p.s IS NOT NULL
            """
        ).fetchone()
        if not changed or changed[0] == 0:
            break


