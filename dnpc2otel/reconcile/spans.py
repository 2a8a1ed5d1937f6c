"""Spans and links: the reconciled contexts as OpenTelemetry spans (names, services, status, attributes)."""

from __future__ import annotations

import duckdb

from ..sources.definitions import ContextType, System
from ..sources.templates import json_member_path, quote_literal


def spans(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType], system: System) -> None:
    """Create ctx_attrs and spans_out; record negative durations (then clamp them)."""
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
                               {quote_literal(system.run_id_attribute)},
                               CASE WHEN starts_with(c.run, 'dir:') THEN NULL ELSE c.run END,
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


def links(con: duckdb.DuckDBPyConnection) -> None:
    """Create span_links_out (relations and second parents) and dangling_links (links to nothing)."""
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


