"""Contexts, their ids and their parents.

Contexts are every (run, type, id) observed or named as a parent; every run has a root context (the
system's `root_context`, id ''). Inside, a context is keyed by the 128-bit MD5 of (run, type, id): ids
that differ in a digit collide under a 64-bit hash often enough to matter (two of 40 real-sized runs did);
at 128 bits a collision is still checked for, never assumed away.

Ids: trace_id = sha256('dnpc2otel/trace/' + run)[:32 hex], span_id = sha256(run/type/id)[:16 hex]:
deterministic, so a replay yields the same ids and re-exports nothing new. OTLP span ids have 64 bits: of
contexts of one trace whose span ids collide, the first (by key) keeps it and the others are re-derived
with a counter suffix, deterministically.

Parents: a context may be asserted child_of several contexts. The primary parent is the one whose type
comes first in the context type's `parents` list (then the source of higher priority); the others become
span links (`also_child_of`). Two claimants of the same type choose neither: the context hangs under the
root, marked `dnpc.orphan`, as does a context with no parent.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import ContextType, System
from ..sources.templates import quote_literal, rows_table


def key_sql(run: str, ctype: str, cid: str) -> str:
    """SQL for a context's internal key (NUL cannot occur in the parts: sources replace it on reading)."""
    return f"md5_number({run} || chr(0) || {ctype} || chr(0) || {cid})"


def declare_types(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    """Tables ctype_parent and ctype: the context types' declarations, for the SQL to join."""
    rows_table(con, "ctype_parent", "type VARCHAR, parent_type VARCHAR, rank INTEGER",
               [(t.name, p, i) for t in types.values() for i, p in enumerate(t.parents)])
    rows_table(con, "ctype", "type VARCHAR, service VARCHAR, default_name VARCHAR, covers BOOLEAN",
               [(t.name, t.service, t.default_name, t.covers_children) for t in types.values()])


def identify(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create ctx (every context, keyed) and ctx_id (its trace and span ids) from obs_t and run_seed."""
    root = quote_literal(system.root_context)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ctx AS
        SELECT DISTINCT ck, run, context_type AS type, context_id AS id FROM obs_t
        UNION SELECT rk, run, related_type, related_id FROM obs_t WHERE relation = 'child_of'
        UNION SELECT {key_sql('run', root, "''")}, run, {root}, '' FROM run_seed
        """
    )
    row = con.execute("SELECT count(*) - count(DISTINCT ck) FROM ctx").fetchone()
    if row and row[0]:
        raise RuntimeError("two contexts hash to the same 128-bit key; please report this input")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_id AS
        SELECT c.ck, c.run, c.type, c.id, s.seed,
               substr(sha256('dnpc2otel/trace/' || s.seed), 1, 32) AS trace_id,
               substr(sha256(s.seed || '/' || c.type || '/' || c.id), 1, 16) AS span_id
        FROM ctx c JOIN run_seed s USING (run)
        """
    )
    # a 64-bit span id collision inside one trace: the later contexts (by key) get a suffixed digest
    con.execute(
        """
        UPDATE ctx_id SET span_id = substr(sha256(x.seed || '/' || x.type || '/' || x.id || '#' || x.n), 1, 16)
        FROM (SELECT ck, seed, type, id, row_number() OVER (PARTITION BY trace_id, span_id ORDER BY ck) - 1 AS n
              FROM ctx_id) x
        WHERE x.ck = ctx_id.ck AND x.n > 0
        """
    )


def choose_parents(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create parent_cand (every claim), parent_rank (claims ranked) and ctx_parent (the primary parent)."""
    root = quote_literal(system.root_context)
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
        f"""
        CREATE OR REPLACE TEMP TABLE ctx_parent AS
        SELECT c.ck,
               CASE WHEN c.type = {root} AND c.id = '' THEN NULL
                    ELSE coalesce(p.pk, {key_sql('c.run', root, "''")}) END AS pk,
               p.pk IS NULL AND NOT (c.type = {root} AND c.id = '') AS orphan
        FROM ctx c LEFT JOIN parent_rank p ON p.ck = c.ck AND p.n = 1 AND NOT p.conflict
        """
    )


