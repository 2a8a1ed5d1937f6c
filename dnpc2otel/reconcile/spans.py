"""Spans and links: the reconciled contexts as OpenTelemetry spans (names, services, status, attributes).

Processes. An OTLP resource is the process that made a span. A context is a process when a converter says
so (attribute `dnpc.process`, the component's role) and the run's root always is one; every span belongs to
the nearest process among its ancestors by any parent claim (itself included; at equal distance the
preferred parent's side), so an execution belongs to its worker and a try to the root. Each span carries
`service.instance.id` = "<run id>/<type>[/<id>]" of its process (deterministic); a process's own span carries
its resource attributes (`host.*`, `os.*`, `process.*`, `service.version`), those it lacks under `host.*`,
`os.*` and `service.version` copied from the process named by its `dnpc.spawned_by` (a worker runs on its
manager's host, in the same installation). Exporters make the resource from these (export/otlp.py).

Status. ERROR or OK as the sources say (`otel.status_code`); a context marked `dnpc.status_from_parent`
(an executor task, whose outcome is its try's; an execution, whose outcome is its executor task's) with no
status of its own takes its parent's ERROR, and an ERROR without a message its parent's message (else its
exception type), from the top down — unless nesting clipped it to the parent (it outlived what failed).
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import ContextType, System
from ..sources.templates import json_member_path, quote_literal
from .contexts import key_sql

INHERITED_PREFIXES = ("host.", "os.")  # (and service.version) what a spawned process shares with its spawner
MAX_DEPTH = 12


def spans(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType], system: System) -> None:
    """Create ctx_attrs, ctx_process, ctx_status and spans_out (needs ctx_bounds after nesting)."""
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
    _processes(con, system)
    _status(con)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE spans_out AS
        SELECT i.trace_id, i.span_id, pi.span_id AS parent_span_id,
               {name_sql} AS name,
               coalesce(ct.service, 'dnpc2otel') AS service_name,
               c.type AS context_type,
               c.s AS start_time_unix_nano, greatest(c.e, c.s) AS end_time_unix_nano,
               coalesce(st.code, 'UNSET') AS status_code, st.message AS status_message,
               json_merge_patch(
                   json_merge_patch(coalesce(a.attrs, '{{}}'), coalesce(pr.extra, '{{}}')),
                   json_object('dnpc.context_type', c.type, 'dnpc.context_id', c.id,
                               {quote_literal(system.run_id_attribute)},
                               CASE WHEN starts_with(c.run, 'dir:') THEN NULL ELSE c.run END,
                               'dnpc.orphan', CASE WHEN c.orphan THEN true END,
                               'dnpc.incomplete', CASE WHEN inc.ck IS NOT NULL THEN true END,
                               'dnpc.sources', src.sources, 'dnpc.bounds.source', c.bounds_source,
                               'dnpc.start.spread_ms', CASE WHEN c.n_sources > 1 THEN c.start_spread_ms END,
                               'dnpc.end.spread_ms', CASE WHEN c.n_sources > 1 THEN c.end_spread_ms END,
                               'dnpc.instant', CASE WHEN n.instant THEN true END,
                               'dnpc.widened.start_ms', nullif(greatest(n.observed_s - c.s, 0), 0) / 1e6,
                               'dnpc.widened.end_ms', nullif(greatest(c.e - n.observed_e, 0), 0) / 1e6,
                               'dnpc.clipped.start_ms', nullif(greatest(c.s - n.observed_s, 0), 0) / 1e6,
                               'dnpc.clipped.end_ms', nullif(greatest(n.observed_e - c.e, 0), 0) / 1e6))
                 AS attributes,
               c.run
        FROM ctx_bounds c
        JOIN ctx_id i USING (ck)
        LEFT JOIN ctx_id pi ON pi.ck = c.pk
        LEFT JOIN ctx_attrs a USING (ck)
        LEFT JOIN ctx_status st USING (ck)
        LEFT JOIN process_extra pr USING (ck)
        LEFT JOIN ctx_nesting n USING (ck)
        LEFT JOIN ctype ct ON ct.type = c.type
        LEFT JOIN (SELECT DISTINCT ck FROM disagreements_out WHERE kind = 'incomplete') inc USING (ck)
        LEFT JOIN (SELECT ck, list_sort(list(DISTINCT converter)) AS sources FROM obs_t GROUP BY ck) src USING (ck)
        """
    )


def _processes(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create ctx_process (each context's process) and process_extra (attributes the spans get from it)."""
    root = quote_literal(system.root_context)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE proc AS
        SELECT ck FROM ctx WHERE type = {root} AND id = ''
        UNION SELECT ck FROM ctx_attr WHERE k = 'dnpc.process'
        """
    )
    # every parent claim, the primary one first (an orphan's is the root)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE proc_edge AS
        SELECT ck, pk, 0 AS rank FROM ctx_parent WHERE pk IS NOT NULL
        UNION SELECT ck, pk, n FROM parent_rank WHERE NOT conflict AND n > 1
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ctx_process AS
        WITH RECURSIVE up(ck, node, depth, path) AS (
            SELECT ck, ck, 0, []::BIGINT[] FROM ctx
            UNION ALL
            SELECT u.ck, e.pk, u.depth + 1, list_append(u.path, e.rank)
            FROM up u JOIN proc_edge e ON e.ck = u.node
            WHERE u.depth < {MAX_DEPTH} AND u.node NOT IN (SELECT ck FROM proc)
        )
        SELECT up.ck, arg_min(up.node, (up.depth, up.path)) AS pck
        FROM up SEMI JOIN proc ON proc.ck = up.node GROUP BY up.ck
        """
    )
    inherited = " OR ".join(f"starts_with(k, {quote_literal(p)})" for p in INHERITED_PREFIXES)
    # what a process shares with the one that spawned it (a worker: its manager's host), through a few levels
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE proc_spawner AS
        SELECT a.ck, {key_sql('c.run', "split_part(ref, ':', 1)", "substr(ref, strpos(ref, ':') + 1)")} AS sck
        FROM (SELECT ck, json_extract_string(v, '$') AS ref FROM ctx_attr WHERE k = 'dnpc.spawned_by') a
        SEMI JOIN proc USING (ck) JOIN ctx c USING (ck)
        WHERE strpos(ref, ':') > 0
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE proc_shared AS
        SELECT ck, k, v, false AS inherited FROM ctx_attr SEMI JOIN proc USING (ck)
        WHERE {inherited} OR k = 'service.version'
        """
    )
    for _ in range(3):
        changed = con.execute(
            """
            INSERT INTO proc_shared
            SELECT DISTINCT s.ck, h.k, h.v, true FROM proc_spawner s JOIN proc_shared h ON h.ck = s.sck
            WHERE s.ck <> s.sck AND NOT EXISTS (SELECT 1 FROM proc_shared x WHERE x.ck = s.ck AND x.k = h.k)
            """
        ).fetchone()
        if not changed or changed[0] == 0:
            break
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE process_extra AS
        WITH m AS (
            -- every span: its process's instance id (the run id, or the trace id of a run known by directory)
            SELECT p.ck, 'service.instance.id' AS k,
                   to_json(CASE WHEN starts_with(pc.run, 'dir:') THEN pi.trace_id ELSE pc.run END || '/' || pc.type
                           || CASE WHEN pc.id <> '' THEN '/' || pc.id ELSE '' END) AS v
            FROM ctx_process p JOIN ctx pc ON pc.ck = p.pck JOIN ctx_id pi ON pi.ck = p.pck
            UNION ALL   -- a process's span: its role (the root's: its type, unless a converter names it)
            SELECT proc.ck, 'dnpc.process', to_json(c.type) FROM proc JOIN ctx c USING (ck)
            WHERE NOT EXISTS (SELECT 1 FROM ctx_attr a WHERE a.ck = proc.ck AND a.k = 'dnpc.process')
            UNION ALL
            SELECT ck, k, v FROM proc_shared WHERE inherited
        )
        SELECT ck, '{' || array_to_string(list_sort(list(to_json(k) || ':' || v::VARCHAR)), ',') || '}' AS extra
        FROM m GROUP BY ck
        """
    )


def _status(con: duckdb.DuckDBPyConnection) -> None:
    """Create ctx_status: each context's status code and message (needs ctx_attrs and ctx_nesting)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_status AS
        SELECT b.ck, b.pk,
               CASE WHEN upper(a.status_code) IN ('ERROR', 'OK') THEN upper(a.status_code) END AS code,
               CASE WHEN upper(a.status_code) = 'ERROR' THEN a.status_message END AS message,
               json_extract_string(a.attrs, '$."exception.type"') AS exception_type,
               -- an outcome that is the parent's, unless nesting found the context outliving the parent
               m.ck IS NOT NULL AND NOT coalesce(n.clipped, false) AS inherits
        FROM ctx_bounds b LEFT JOIN ctx_attrs a USING (ck) LEFT JOIN ctx_nesting n USING (ck)
        LEFT JOIN (SELECT DISTINCT ck FROM ctx_attr WHERE k = 'dnpc.status_from_parent') m USING (ck)
        """
    )
    # from the top down (a worker's execution › its executor task › the try): the parent's ERROR, and its
    # message (else its exception type) where the context's own ERROR has none
    for _ in range(MAX_DEPTH):
        changed = con.execute(
            """
            UPDATE ctx_status AS c SET code = 'ERROR', message = coalesce(c.message, p.message, p.exception_type)
            FROM ctx_status p
            WHERE p.ck = c.pk AND c.inherits AND p.code = 'ERROR'
              AND (c.code IS NULL OR (c.code = 'ERROR' AND c.message IS NULL
                                      AND coalesce(p.message, p.exception_type) IS NOT NULL))
            """
        ).fetchone()
        if not changed or changed[0] == 0:
            break


def links(con: duckdb.DuckDBPyConnection) -> None:
    """Create span_links_out (relations and second parents) and dangling_links (links to nothing)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE span_links_out AS
        -- one link per (context, related context, relation), from its first line; the related context's name
        -- from ctx_id: keys and a window, not a GROUP BY over strings, so that DuckDB spills at 10^6 tasks
        WITH rel AS (
            SELECT ck, rk AS lk, relation, source, line
            FROM obs_t WHERE relation NOT IN ('child_of', 'alias')
            QUALIFY row_number() OVER (PARTITION BY ck, rk, relation ORDER BY source, line) = 1
            UNION ALL
            SELECT ck, pk, CASE WHEN conflict THEN 'conflicting_parent' ELSE 'also_child_of' END, NULL, NULL
            FROM parent_rank WHERE n > 1 OR conflict
        )
        SELECT i.trace_id, i.span_id, l.trace_id AS linked_trace_id, l.span_id AS linked_span_id,
               json_object('dnpc.relation', r.relation, 'dnpc.linked_context', l.type || ':' || l.id,
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


