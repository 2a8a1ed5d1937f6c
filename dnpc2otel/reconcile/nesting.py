"""Nesting: every span inside its (OTLP) parent, and no span without a duration.

The bounds step times each context from its own sources; a child can still lie partly outside its parent,
because the two are timed by different sources (a worker logs 'All processing finished' after it sent the
result the DFK has already recorded; another host's clock; a log written to the second). Trace viewers
take such a child for clock skew (Jaeger: "clock skew adjustment disabled; not applying calculated delta")
and a span whose end is not after its start for an error ("Negative duration detected, sanitizing end
timestamp"). The policy, in this order:

1. A source's end before its start is recorded (`negative_duration`) and clamped to the start.
2. An instant (end = start: a context the sources time by one moment, or not at all) becomes a span of
   1 ns, marked `dnpc.instant`: as near to zero as a span can be without the viewer rewriting it.
3. Within the measurement error — TOLERANCE_MS, plus the timestamp resolution of the two spans' sources
   (1 s for a log written to the second, 1 ms to the millisecond), plus the measured skew of an uncorrected
   host clock that times one of them (`clocks.skew_ms`) — the two spans' sources are weighed as the bounds
   step weighs them: the bound of the better-attested source (lower converter priority) stands. So the
   parent is widened over its child (its true end is at least the child's observed end) unless the
   parent's own bound is better attested, in which case the child is trimmed to it. A try timed by
   monitoring.db or parsl.log keeps its times, and an executor task that covers its worker's execution up
   to the worker's 'All processing finished' (logged after it sent the result the DFK recorded) is trimmed
   to the try, its execution with it. A parent that covers its children (`covers_children`, the root)
   covers them by any amount, and an open one (`incomplete`: no source saw it end) lasts at least as long
   as they do. Either way the change is on the span: `dnpc.widened.start_ms` / `…end_ms` (the parent),
   `dnpc.clipped.start_ms` / `…end_ms` (the child); the events keep their observed times.
4. Beyond it the sources disagree: the child is clipped to its parent (and its own children to it) and
   the disagreement recorded (`child_outside_parent`, with the observed bounds). (A worker that went on with
   a task after its manager was declared lost and the try failed: the execution outlived its try.)
"""

from __future__ import annotations

import duckdb

from . import disagreements

TOLERANCE_MS = 10.0  # clocks of processes (NTP-synchronised hosts) and their logs' delays: a few ms
MAX_DEPTH = 12  # levels of the context hierarchy (workflow › task › try › executor task › execution …)


def nest(con: duckdb.DuckDBPyConnection, tolerance_ms: float = TOLERANCE_MS) -> None:
    """Update ctx_bounds so that every span lies inside its primary parent; create ctx_nesting (what was
    changed, per context) and record negative_duration and child_outside_parent disagreements."""
    _negative_durations(con)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_nesting AS
        SELECT ck, pk, s AS observed_s, e AS observed_e, s = e AS instant, false AS clipped
        FROM ctx_bounds WHERE s IS NOT NULL
        """
    )
    con.execute("UPDATE ctx_bounds SET e = s + 1 WHERE s IS NOT NULL AND e = s")
    con.execute("UPDATE ctx_nesting SET observed_e = observed_s + 1 WHERE instant")
    _tolerances(con, tolerance_ms)
    _settle(con)
    _clip(con)
    disagreements.child_outside_parent(con)


def _negative_durations(con: duckdb.DuckDBPyConnection) -> None:
    # a span may not end before it starts: where the sources say so, it is recorded, then clamped
    con.execute(
        """
        INSERT INTO disagreements_out
        SELECT i.trace_id, i.span_id, c.type, c.id, 'negative_duration', 'end before start', (c.s - c.e) / 1e6,
               json_object('start', c.s, 'end', c.e), c.ck
        FROM ctx_bounds c JOIN ctx_id i USING (ck) WHERE c.e < c.s
        """
    )
    con.execute("UPDATE ctx_bounds SET e = s WHERE e < s")


def _tolerances(con: duckdb.DuckDBPyConnection, tolerance_ms: float) -> None:
    """edge_tolerance(ck, tol_ns): how far a context may lie outside its parent before they disagree."""
    # a source whose every time is a whole second (millisecond) could not say better: its resolution
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE source_resolution AS
        SELECT run, converter,
               CASE WHEN bool_and(t % 1000000000 = 0) THEN 1000000000 WHEN bool_and(t % 1000000 = 0) THEN 1000000
                    ELSE 0 END AS res
        FROM obs_t WHERE t IS NOT NULL GROUP BY ALL
        """
    )
    # a host clock left uncorrected is off by up to its measured skew (the least shift that restores every
    # causal order, skew.py): so much more may a span it times lie outside one timed by another clock
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_clock_error AS
        SELECT o.ck, CAST(max(abs(k.skew_ms)) * 1e6 AS BIGINT) AS err
        FROM obs_t o JOIN ctx_bounds b ON b.ck = o.ck AND b.bounds_source = o.converter
        JOIN clocks_out k ON k.run = o.run AND k.clock = o.clock
        WHERE NOT k.corrected AND k.skew_ms IS NOT NULL AND o.t IS NOT NULL
        GROUP BY o.ck
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE edge_tolerance AS
        SELECT c.ck, CAST({float(tolerance_ms)} * 1e6 AS BIGINT) + coalesce(rc.res, 0) + coalesce(rp.res, 0)
                     + greatest(coalesce(ec.err, 0), coalesce(ep.err, 0)) AS tol
        FROM ctx_bounds c JOIN ctx_bounds p ON p.ck = c.pk
        LEFT JOIN source_resolution rc ON rc.run = c.run AND rc.converter = c.bounds_source
        LEFT JOIN source_resolution rp ON rp.run = p.run AND rp.converter = p.bounds_source
        LEFT JOIN ctx_clock_error ec ON ec.ck = c.ck
        LEFT JOIN ctx_clock_error ep ON ep.ck = p.ck
        """
    )


def _settle(con: duckdb.DuckDBPyConnection) -> None:
    """Within the tolerance, the side whose source is less trusted gives way: the parent is widened over the
    child, or the child trimmed to the parent; level by level, until nothing changes."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE nest_cover AS
        SELECT b.ck, b.covers OR b.pk IS NULL AS any_start, b.covers OR b.pk IS NULL OR o.ck IS NOT NULL AS any_end,
               b.pk IS NULL AS root, o.ck IS NOT NULL AS open
        FROM ctx_bounds b LEFT JOIN (SELECT DISTINCT ck FROM disagreements_out WHERE kind = 'incomplete') o USING (ck)
        """
    )
    for _ in range(MAX_DEPTH):
        # (a parent that covers its children, the root among them, covers them by any amount; an open one,
        # which no source saw end, lasted at least as long as they did; measured from the parent's own bounds)
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE nest_edge AS
            SELECT c.ck, c.pk, c.s, c.e, c.s_prio, c.e_prio, p.s AS ps, p.e AS pe,
                   c.s < p.s AND (c.s >= n.observed_s - t.tol OR w.any_start) AS early,
                   c.e > p.e AND (c.e <= n.observed_e + t.tol OR w.any_end) AS late,
                   -- the parent gives way unless its own bound is better attested than the child's (the root
                   -- and an open context's end always do)
                   w.root OR coalesce(p.s_prio, 999) >= coalesce(c.s_prio, 999) AS parent_yields_start,
                   w.root OR w.open OR coalesce(p.e_prio, 999) >= coalesce(c.e_prio, 999) AS parent_yields_end
            FROM ctx_bounds c JOIN edge_tolerance t USING (ck)
            JOIN ctx_bounds p ON p.ck = c.pk JOIN ctx_nesting n ON n.ck = c.pk JOIN nest_cover w ON w.ck = c.pk
            WHERE c.s < p.s OR c.e > p.e
            """
        )
        widened = con.execute(
            """
            UPDATE ctx_bounds AS p
            SET s = coalesce(least(p.s, w.s), p.s), e = coalesce(greatest(p.e, w.e), p.e),
                s_prio = CASE WHEN w.s < p.s THEN w.s_prio ELSE p.s_prio END,
                e_prio = CASE WHEN w.e > p.e THEN w.e_prio ELSE p.e_prio END
            FROM (SELECT pk AS ck,
                         min(s) FILTER (WHERE early AND parent_yields_start) AS s,
                         arg_min(s_prio, s) FILTER (WHERE early AND parent_yields_start) AS s_prio,
                         max(e) FILTER (WHERE late AND parent_yields_end) AS e,
                         arg_max(e_prio, e) FILTER (WHERE late AND parent_yields_end) AS e_prio
                  FROM nest_edge GROUP BY pk) w
            WHERE w.ck = p.ck AND (w.s IS NOT NULL OR w.e IS NOT NULL)
            """
        ).fetchone()
        trimmed = con.execute(
            """
            UPDATE ctx_bounds AS c
            SET s = least(x.new_s, x.new_e - 1), e = x.new_e,
                s_prio = CASE WHEN x.trim_start THEN x.ps_prio ELSE c.s_prio END,
                e_prio = CASE WHEN x.trim_end THEN x.pe_prio ELSE c.e_prio END
            FROM (SELECT e.ck, e.early AND NOT e.parent_yields_start AS trim_start,
                         e.late AND NOT e.parent_yields_end AS trim_end,
                         CASE WHEN e.early AND NOT e.parent_yields_start THEN e.ps ELSE e.s END AS new_s,
                         CASE WHEN e.late AND NOT e.parent_yields_end THEN e.pe ELSE e.e END AS new_e,
                         p.s_prio AS ps_prio, p.e_prio AS pe_prio
                  FROM nest_edge e JOIN ctx_bounds p ON p.ck = e.pk
                  WHERE (e.early AND NOT e.parent_yields_start) OR (e.late AND NOT e.parent_yields_end)) x
            WHERE x.ck = c.ck
            """
        ).fetchone()
        if not (widened and widened[0]) and not (trimmed and trimmed[0]):
            break


def _clip(con: duckdb.DuckDBPyConnection) -> None:
    """Clip what still lies outside its parent, from the root down (a clipped context's children follow)."""
    for _ in range(MAX_DEPTH):
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE nest_clip AS
            SELECT c.ck, least(greatest(c.s, p.s), p.e - 1) AS s
            , greatest(least(c.e, p.e), least(greatest(c.s, p.s), p.e - 1) + 1) AS e
            FROM ctx_bounds c JOIN ctx_bounds p ON p.ck = c.pk
            WHERE c.s < p.s OR c.e > p.e
            """
        )
        changed = con.execute(
            "UPDATE ctx_bounds AS c SET s = x.s, e = x.e FROM nest_clip x WHERE x.ck = c.ck"
        ).fetchone()
        if not changed or changed[0] == 0:
            break
        con.execute("UPDATE ctx_nesting AS n SET clipped = true FROM nest_clip x WHERE x.ck = n.ck")
    # what was clipped, against its parent's final bounds: the evidence of a child_outside_parent
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE nest_clipped AS
        SELECT n.ck, greatest(p.s - n.observed_s, 0) AS early, greatest(n.observed_e - p.e, 0) AS late,
               CASE WHEN n.observed_s < p.s AND n.observed_e > p.e THEN 'starts before and ends after parent'
                    WHEN n.observed_s < p.s THEN 'starts before parent' ELSE 'ends after parent' END AS subject,
               json_object('parent', pc.type || ':' || pc.id, 'start', n.observed_s, 'end', n.observed_e,
                           'parent_start', p.s, 'parent_end', p.e, 'tolerance_ms', t.tol / 1e6) AS detail
        FROM ctx_nesting n JOIN ctx_bounds p ON p.ck = n.pk JOIN ctx pc ON pc.ck = n.pk
        JOIN edge_tolerance t ON t.ck = n.ck
        WHERE n.clipped
        """
    )
