"""Reconciliation: observations → contexts → spans, events and links (all in DuckDB SQL).

Policy, in order:
1. Runs. A source names its run either by Parsl run_id or by run directory ('dir:000'); `alias`
   observations (parsl.log's "Run id is", monitoring.db's workflow.rundir) join the two. A run's
   canonical key is its run_id when any source gives it. A file that knows no run (TaskVine's shared
   logs) goes to the run whose time window holds its first record.
2. Time. Naive local times are shifted by the run's UTC offset (see `clock`); hosts' clock skew is
   measured from causal event pairs and, on request, corrected (see `skew`).
3. Contexts are every (run, type, id) observed or named as a parent; every run has a workflow context.
   Inside, a context is keyed by a 64-bit hash of (run, type, id) (a collision is detected, not ignored).
4. Parents. A context may be asserted child_of several contexts. The primary parent is the one whose
   type comes first in the context type's `parents` list (then the source of higher priority); the
   others become span links with relation `also_child_of`. A context with no parent hangs under the
   workflow, marked `dnpc.orphan`.
5. Bounds. Each source bounds a context by the earliest/latest of its events (events a converter marks
   bounds=false — monitoring's status echoes, resource samples — and observations without an event count
   only when there is nothing else). The span takes the bounds of the most trusted source (lowest
   converter priority: monitoring.db, then parsl.log, …) and records the others' spread
   (`dnpc.start.spread_ms`, `dnpc.end.spread_ms`, `dnpc.bounds.source`); types that
   `covers_children` widen to their children (those of any parent claim, primary or not); a context with
   no time of its own takes its children's.
6. Attributes. For each key the latest observed value wins (ties: the higher-priority source); every
   value stays in `observations`. `otel.status_code` / `otel.status_description` become the status.
7. Ids. trace_id = sha256('dnpc2otel/trace/' + run)[:32 hex]; span_id = sha256(run/type/id)[:16 hex]:
   deterministic, so a replay yields the same ids and re-exports nothing new.
"""

from __future__ import annotations

import duckdb

from . import clock, disagreements, skew
from .definitions import Causality, ContextType
from .templates import json_member_path, quote_literal, rows_table

MAX_DEPTH = 10


def reconcile(
    con: duckdb.DuckDBPyConnection,
    types: dict[str, ContextType],
    run_dirs: list[str] | None,
    root: str,
    timezone: str | None = None,
    threshold_ms: float = disagreements.DEFAULT_THRESHOLD_MS,
    causality: list[Causality] | None = None,
    correct_skew: bool = False,
) -> None:
    """Build tables spans_out, span_links_out, disagreements_out and runs_out from table observations."""
    _runs(con, run_dirs, root)
    clock.infer_offsets(con, timezone)
    if timezone is None:
        clock.infer_clock_offsets(con)
    else:  # a zone given by the user holds for every host
        con.execute("CREATE OR REPLACE TEMP TABLE clock_offset (run VARCHAR, clock VARCHAR, offset_ns BIGINT)")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE obs_t AS
        SELECT o.*, {clock.resolved_time_sql('o')} AS t,
               -- integer keys of the context and of the related one: joins and groupings on 64-bit hashes
               hash(o.run, o.context_type, o.context_id) AS ck,
               CASE WHEN o.related_id IS NOT NULL AND o.relation <> 'alias'
                    THEN hash(o.run, o.related_type, o.related_id) END AS rk
        FROM obs o JOIN run_clock c USING (run) LEFT JOIN clock_offset co USING (run, clock)
        """
    )
    _context_types(con, types)
    _contexts(con)
    _parents(con)
    skew.measure(con, causality or [], correct_skew)
    _attributes(con)
    disagreements.find(con, types, threshold_ms)
    _bounds(con)
    _spans(con, types)
    _links(con)
    _run_table(con)


def _runs(con: duckdb.DuckDBPyConnection, run_dirs: list[str] | None, root: str) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE run_map AS
        WITH pairs AS (
            SELECT DISTINCT run_key AS a, related_id AS b FROM observations
            WHERE relation = 'alias' AND run_key IS NOT NULL AND related_id IS NOT NULL
        ), adj AS (SELECT a AS k, b AS o FROM pairs UNION SELECT b, a FROM pairs),
        keys AS (SELECT DISTINCT run_key AS k FROM observations WHERE run_key IS NOT NULL)
        SELECT keys.k AS run_key,
               coalesce(CASE WHEN NOT starts_with(keys.k, 'dir:') THEN keys.k END,
                        min(adj.o) FILTER (WHERE NOT starts_with(adj.o, 'dir:')), keys.k) AS run
        FROM keys LEFT JOIN adj ON adj.k = keys.k GROUP BY keys.k
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE run_dir AS
        SELECT DISTINCT m.run, substr(k, 5) AS dir FROM run_map m,
               (SELECT run_key AS k, run_key AS r FROM run_map
                UNION SELECT related_id, run_key FROM observations WHERE relation = 'alias') x
        WHERE x.r = m.run_key AND starts_with(x.k, 'dir:')
        """
    )
    keep = "TRUE"
    if run_dirs is not None:
        dirs = ", ".join(quote_literal(d) for d in run_dirs)
        keep = f"m.run IN (SELECT run FROM run_dir WHERE dir IN ({dirs}))"
    # A file that does not know its run (TaskVine's logs, shared by the runs of a run_dir) belongs to the
    # run whose epoch time window holds the file's first record, else the latest run started before it,
    # else the only run there is.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE source_run AS
        WITH files AS (SELECT source, min(time_ns) AS t0 FROM observations WHERE run_key IS NULL GROUP BY source),
        windows AS (SELECT m.run, min(o.time_ns) AS s, max(o.time_ns) AS e
                    FROM observations o JOIN run_map m USING (run_key) WHERE o.time_ns IS NOT NULL GROUP BY m.run)
        SELECT f.source, coalesce(
            (SELECT w.run FROM windows w WHERE f.t0 BETWEEN w.s AND w.e ORDER BY w.s DESC, w.run LIMIT 1),
            (SELECT w.run FROM windows w WHERE w.s <= f.t0 ORDER BY w.s DESC, w.run LIMIT 1),
            (SELECT min(run) FROM run_map HAVING count(DISTINCT run) = 1)) AS run
        FROM files f
        """
    )
    # a run known only by its directory is seeded by the directory's absolute path: stable, and two
    # run_dirs with a 000 each do not collide
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW obs AS
        SELECT m.run, o.* FROM observations o JOIN run_map m USING (run_key) WHERE {keep}
        UNION ALL
        SELECT m.run, o.* FROM observations o JOIN source_run m USING (source) WHERE o.run_key IS NULL AND {keep}
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE run_seed AS
        SELECT DISTINCT m.run,
               CASE WHEN starts_with(m.run, 'dir:') THEN 'path:' || {quote_literal(root)} || '/' || substr(m.run, 5)
                    ELSE m.run END AS seed
        FROM run_map m WHERE {keep}
        """
    )


def _context_types(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    rows_table(con, "ctype_parent", "type VARCHAR, parent_type VARCHAR, rank INTEGER",
               [(t.name, p, i) for t in types.values() for i, p in enumerate(t.parents)])
    rows_table(con, "ctype", "type VARCHAR, service VARCHAR, default_name VARCHAR, covers BOOLEAN",
               [(t.name, t.service, t.default_name, t.covers_children) for t in types.values()])


def _contexts(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx AS
        SELECT DISTINCT ck, run, context_type AS type, context_id AS id FROM obs_t
        UNION SELECT rk, run, related_type, related_id FROM obs_t WHERE relation = 'child_of'
        UNION SELECT hash(run, 'workflow', ''), run, 'workflow', '' FROM run_seed
        """
    )
    row = con.execute("SELECT count(*) - count(DISTINCT ck) FROM ctx").fetchone()
    if row and row[0]:
        raise RuntimeError("two contexts hash to the same 64-bit key; please report this input")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_id AS
        SELECT c.ck, c.run, c.type, c.id, s.seed,
               substr(sha256('dnpc2otel/trace/' || s.seed), 1, 32) AS trace_id,
               substr(sha256(s.seed || '/' || c.type || '/' || c.id), 1, 16) AS span_id
        FROM ctx c JOIN run_seed s USING (run)
        """
    )


def _parents(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE parent_cand AS
        SELECT o.ck, o.rk AS pk, o.run, o.context_type AS type, o.context_id AS id, o.related_type AS ptype,
               o.related_id AS pid, coalesce(min(r.rank), 99) AS rank, min(o.priority) AS prio
        FROM obs_t o LEFT JOIN ctype_parent r ON r.type = o.context_type AND r.parent_type = o.related_type
        WHERE o.relation = 'child_of' AND o.rk <> o.ck
        GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE parent_rank AS
        SELECT *, row_number() OVER (PARTITION BY ck ORDER BY rank, prio, ptype, pid) AS n,
               -- two claimants of the same type (an id reused, a try launched twice): choose none of them
               count(*) OVER (PARTITION BY ck, ptype) > 1 AS conflict
        FROM parent_cand
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_parent AS
        SELECT c.ck,
               CASE WHEN c.type = 'workflow' AND c.id = '' THEN NULL
                    ELSE coalesce(p.pk, hash(c.run, 'workflow', '')) END AS pk,
               p.pk IS NULL AND NOT (c.type = 'workflow' AND c.id = '') AS orphan
        FROM ctx c LEFT JOIN parent_rank p ON p.ck = c.ck AND p.n = 1 AND NOT p.conflict
        """
    )


def _attributes(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE kv AS
        SELECT ck, e.key AS k, e.value AS v, t, priority, line FROM (
            SELECT ck, t, priority, line,
                   unnest(map_entries(CAST(CAST(attributes AS JSON) AS MAP(VARCHAR, JSON)))) AS e
            FROM obs_t WHERE attributes IS NOT NULL AND attributes <> '{}'
        ) WHERE e.value IS NOT NULL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_attr AS
        SELECT ck, k,
               -- latest wins; then the higher-priority source; then the earlier line; then the value itself
               arg_max(v, (t IS NOT NULL, coalesce(t, 0), -priority, -coalesce(line, 0), v::VARCHAR)) AS v
        FROM kv GROUP BY ck, k
        """
    )


def _bounds(con: duckdb.DuckDBPyConnection) -> None:
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
        SELECT ck,
               arg_min(s, (priority, converter)) AS s,
               -- an open (incomplete) context lasted until its last sign of life, whichever source saw it
               CASE WHEN bool_or(inc.ck IS NOT NULL) THEN max(e) ELSE arg_min(e, (priority, converter)) END AS e,
               arg_min(converter, (priority, converter)) AS bounds_source,
               count(*) AS n_sources,
               (max(s) - min(s)) / 1e6 AS start_spread_ms, (max(e) - min(e)) / 1e6 AS end_spread_ms
        FROM source_bounds
        LEFT JOIN (SELECT DISTINCT ck FROM disagreements_out WHERE kind = 'incomplete') inc USING (ck)
        GROUP BY ck
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_bounds AS
        SELECT c.ck, c.run, c.type, c.id, p.pk, p.orphan, b.s, b.e, b.s IS NULL AS untimed,
               coalesce(ct.covers, false) AS covers, b.bounds_source, b.n_sources, b.start_spread_ms,
               b.end_spread_ms
        FROM ctx c
        JOIN ctx_parent p USING (ck)
        LEFT JOIN chosen_bounds b USING (ck)
        LEFT JOIN ctype ct ON ct.type = c.type
        """
    )
    # widen parents that cover their children (and parents with no time of their own), level by level
    for _ in range(MAX_DEPTH):
        changed = con.execute(
            """
            UPDATE ctx_bounds AS p SET s = least(coalesce(p.s, ch.s), ch.s), e = greatest(coalesce(p.e, ch.e), ch.e)
            FROM (SELECT r.pk, min(c.s) AS s, max(c.e) AS e
                  FROM (SELECT ck, pk FROM ctx_bounds UNION SELECT ck, pk FROM parent_cand) r
                  JOIN ctx_bounds c USING (ck) WHERE c.s IS NOT NULL GROUP BY r.pk) ch
            WHERE ch.pk = p.ck AND (p.covers OR p.untimed OR p.type = 'workflow')
              AND (p.s IS NULL OR ch.s < p.s OR ch.e > p.e)
            """
        ).fetchone()
        if not changed or changed[0] == 0:
            break
    # still untimed (no own time, no timed child): a zero-length span at the parent's start
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


def _spans(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    name_cases = []
    for t in types.values():
        attrs = [f"json_extract_string(a.attrs, {quote_literal(json_member_path(k))})" for k in t.name_attributes]
        name_cases.append(
            f"WHEN {quote_literal(t.name)} THEN coalesce({', '.join(attrs + [quote_literal(t.default_name)])})"
        )
    name_sql = f"CASE c.type {' '.join(name_cases)} ELSE c.type END" if name_cases else "c.type"
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_attrs AS
        SELECT ck,
               -- members sorted (by key: each starts with its quoted key), so a replay writes identical JSON
               '{' || coalesce(array_to_string(list_sort(list(to_json(k) || ':' || v::VARCHAR)
                                                         FILTER (WHERE NOT starts_with(k, 'otel.'))), ','), '') || '}'
                 AS attrs,
               max(json_extract_string(v, '$')) FILTER (WHERE k = 'otel.status_code') AS status_code,
               max(json_extract_string(v, '$')) FILTER (WHERE k = 'otel.status_description') AS status_message
        FROM ctx_attr GROUP BY ALL
        """
    )
    # a span may not end before it starts: where the sources say so, it is recorded, then clamped
    con.execute(
        """
        INSERT INTO disagreements_out
        SELECT i.trace_id, i.span_id, c.type, c.id, 'negative_duration', 'end before start', (c.s - c.e) / 1e6,
               json_object('start', c.s, 'end', c.e), c.ck
        FROM ctx_bounds c JOIN ctx_id i USING (ck) WHERE c.e < c.s
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE spans_out AS
        SELECT i.trace_id, i.span_id, pi.span_id AS parent_span_id,
               {name_sql} AS name,
               coalesce(ct.service, 'dnpc2otel') AS service_name,
               c.type AS context_type,
               c.s AS start_time_unix_nano, greatest(c.e, c.s) AS end_time_unix_nano,
               CASE WHEN upper(a.status_code) = 'ERROR' THEN 'ERROR' WHEN upper(a.status_code) = 'OK' THEN 'OK'
                    ELSE 'UNSET' END AS status_code,
               CASE WHEN upper(a.status_code) = 'ERROR' THEN a.status_message END AS status_message,
               json_merge_patch(
                   coalesce(a.attrs, '{{}}'),
                   json_object('dnpc.context_type', c.type, 'dnpc.context_id', c.id,
                               'parsl.run_id', CASE WHEN starts_with(c.run, 'dir:') THEN NULL ELSE c.run END,
                               'dnpc.orphan', CASE WHEN c.orphan THEN true END,
                               'dnpc.incomplete', CASE WHEN inc.ck IS NOT NULL THEN true END,
                               'dnpc.sources', src.sources, 'dnpc.bounds.source', c.bounds_source,
                               'dnpc.start.spread_ms', CASE WHEN c.n_sources > 1 THEN c.start_spread_ms END,
                               'dnpc.end.spread_ms', CASE WHEN c.n_sources > 1 THEN c.end_spread_ms END))
                 AS attributes,
               c.run
        FROM ctx_bounds c
        JOIN ctx_id i USING (ck)
        LEFT JOIN ctx_id pi ON pi.ck = c.pk
        LEFT JOIN ctx_attrs a USING (ck)
        LEFT JOIN ctype ct ON ct.type = c.type
        LEFT JOIN (SELECT DISTINCT ck FROM disagreements_out WHERE kind = 'incomplete') inc USING (ck)
        LEFT JOIN (SELECT ck, list_sort(list(DISTINCT converter)) AS sources FROM obs_t GROUP BY ck) src USING (ck)
        """
    )


def _links(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE span_links_out AS
        WITH rel AS (
            SELECT ck, rk AS lk, related_type AS ltype, related_id AS lid, relation, min(source) AS source,
                   min(line) AS line
            FROM obs_t WHERE relation NOT IN ('child_of', 'alias') GROUP BY ALL
            UNION ALL
            SELECT ck, pk, ptype, pid, CASE WHEN conflict THEN 'conflicting_parent' ELSE 'also_child_of' END,
                   NULL, NULL
            FROM parent_rank WHERE n > 1 OR conflict
        )
        SELECT i.trace_id, i.span_id, l.trace_id AS linked_trace_id, l.span_id AS linked_span_id,
               json_object('dnpc.relation', r.relation, 'dnpc.linked_context', r.ltype || ':' || r.lid,
                           -- Jaeger shows links as FOLLOWS_FROM references unless told otherwise: a second
                           -- parent is a CHILD_OF reference there, dependencies and the like follow from
                           'opentracing.ref_type',
                           CASE WHEN r.relation = 'also_child_of' THEN 'child_of' ELSE 'follows_from' END,
                           'dnpc.source', r.source, 'dnpc.line', r.line) AS attributes
        FROM rel r JOIN ctx_id i ON i.ck = r.ck JOIN ctx_id l ON l.ck = r.lk
        """
    )
    # links whose target context no source describes are not emitted; count them for the summary
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE dangling_links AS
        SELECT o.run, o.context_type, o.context_id, o.relation, o.related_type, o.related_id
        FROM obs_t o LEFT JOIN ctx_id l ON l.ck = o.rk
        WHERE o.relation NOT IN ('child_of', 'alias') AND l.span_id IS NULL
        """
    )


def _run_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE runs_out AS
        SELECT s.run AS run_key,
               CASE WHEN starts_with(s.run, 'dir:') THEN NULL ELSE s.run END AS run_id,
               (SELECT string_agg(dir, ',' ORDER BY dir) FROM run_dir d WHERE d.run = s.run) AS run_dir,
               i.trace_id,
               (c.offset_ns // 1000000000)::INTEGER AS utc_offset_seconds, c.tz AS timezone, c.offset_source,
               w.start_time_unix_nano, w.end_time_unix_nano,
               (SELECT count(*) FROM spans_out x WHERE x.run = s.run) AS spans
        FROM run_seed s
        JOIN ctx_id i ON i.run = s.run AND i.type = 'workflow' AND i.id = ''
        JOIN run_clock c ON c.run = s.run
        JOIN spans_out w ON w.run = s.run AND w.span_id = i.span_id
        """
    )

