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

Inferred parents (`[[bindings]]` of the definitions): where no record names a context's parent, evidence may
tie it to one. A binding matches an evidence context (the context, or its child of type `through`) to a
parent by equal attribute values — the evidence's context attributes, the parent's event attributes — at
times inside the evidence's window (its first to last observation, any source). The policy, one to one or
nothing: the evidence has one value per match attribute and binds one context; the context has no claimed
parent of the type, the parent no claimed child of the context's type; the context matches one parent and
the parent one context; and every such event of the parent that carries the match attributes lies inside
the windows it matched; windows with equal values that overlap (a pid on two hosts at once) bind nothing.
A binding is an observation of the declaring source (its evidence line, rule `binding:NAME`) with
`dnpc.binding = inferred` and the binding's `dnpc.inferred`; it then competes as a claim like any other.

Parents named by reference (an emit's `parent_path` or `parent_by`, encoded in the claim's related_type, see
sources.model.Emit.parent_ref): after the bindings, `resolve_references` turns each into a plain claim — by
path, the deepest context reached from the named one through one child of each listed type; by value, the
run's one context of the type with that attribute value — before the claims are ranked.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import duckdb

from ..sources.definitions import Binding, ContextType, System
from ..sources.templates import quote_literal, rows_table


def key_sql(run: str, ctype: str, cid: str) -> str:
    """SQL for a context's internal key (NUL cannot occur in the parts: sources replace it on reading)."""
    return f"md5_number({run} || chr(0) || {ctype} || chr(0) || {cid})"


def declare_types(con: duckdb.DuckDBPyConnection, types: dict[str, ContextType]) -> None:
    """Tables ctype_parent, ctype and ctype_binding: the context types' declarations, for the SQL to join
    (and the bindings gathered on the types, which choose_parents runs)."""
    rows_table(con, "ctype_parent", "type VARCHAR, parent_type VARCHAR, rank INTEGER",
               [(t.name, p, i) for t in types.values() for i, p in enumerate(t.parents)])
    rows_table(con, "ctype", "type VARCHAR, service VARCHAR, default_name VARCHAR, covers BOOLEAN",
               [(t.name, t.service, t.default_name, t.covers_children) for t in types.values()])
    # the bindings, in declaration order: choose_parents runs them before ranking the claims
    rows_table(con, "ctype_binding", "n INTEGER, spec JSON",
               [(i, json.dumps(asdict(b))) for i, b in enumerate(b for t in types.values() for b in t.bindings)])


def identify(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create ctx (every context, keyed) and ctx_id (its trace and span ids) from obs_t and run_seed."""
    root = quote_literal(system.root_context)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ctx AS
        SELECT DISTINCT ck, run, context_type AS type, context_id AS id FROM obs_t
        UNION SELECT rk, run, related_type, related_id FROM obs_t
              WHERE relation = 'child_of' AND NOT {_IS_REFERENCE.format(t='related_type')}
        -- a path starts at a context the source names (the fallback parent); a value lookup names none
        UNION SELECT {key_sql('run', _PATH_START, 'related_id')}, run, {_PATH_START}, related_id FROM obs_t
              WHERE relation = 'child_of' AND contains(related_type, '/')
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
    """Create parent_cand (every claim), parent_rank (claims ranked) and ctx_parent (the primary parent);
    first add to obs_t the claims the declared bindings infer."""
    for (spec,) in con.execute("SELECT spec FROM ctype_binding ORDER BY n").fetchall():
        bind(con, Binding(**json.loads(spec)))
    resolve_references(con)
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




# a parent claim whose related_type encodes a path ('try/executor_task/worker_execution') or a value lookup
# ('block[parsl.block.job_id]'): see sources.model.Emit.parent_ref
_IS_REFERENCE = "(contains({t}, '/') OR contains({t}, '['))"
_PATH_START = "split_part(related_type, '/', 1)"


def resolve_references(con: duckdb.DuckDBPyConnection) -> None:
    """Turn the parent claims that name their parent by path or by an attribute's value into plain claims.

    By path (`parent_path`): from the named context, step down to its one child of each type in turn, through
    the child_of claims of every source (bindings included); a step with no such child, or several, stops the
    descent there, and the parent is the deepest context reached (the named one at worst: a thread pool's try
    has no executor task). By value (`parent_by`): the run's one context of the type whose attribute has the
    value. A context whose only parent claims are such lookups, none of which finds its parent, is not of this
    run (an accounting dump lists other jobs too): its observations are dropped. One found several times
    (a job id two blocks share) keeps its other claims, or hangs under the root (`dnpc.orphan`)."""
    row = con.execute(f"SELECT count(*) FROM obs_t WHERE relation = 'child_of' AND "
                      f"{_IS_REFERENCE.format(t='related_type')}").fetchone()
    if not row or not row[0]:
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE parent_ref AS
        SELECT DISTINCT run, related_type AS ref, related_id AS ref_id,
               string_split(related_type, '/') AS steps, 1 AS step,
               {key_sql('run', _PATH_START, 'related_id')} AS pk, {_PATH_START} AS ptype, related_id AS pid
        FROM obs_t WHERE relation = 'child_of' AND contains(related_type, '/')
        """
    )
    depth = con.execute("SELECT coalesce(max(len(steps)), 0) FROM parent_ref").fetchone()
    for _ in range(1, depth[0] if depth else 0):
        con.execute(
            """
            UPDATE parent_ref SET pk = c.ck, ptype = c.type, pid = c.id, step = parent_ref.step + 1
            FROM (SELECT r.run, r.ref, r.ref_id, min(o.ck) AS ck, any_value(o.context_type) AS type,
                         min(o.context_id) AS id
                  FROM parent_ref r JOIN obs_t o
                    ON o.run = r.run AND o.rk = r.pk AND o.relation = 'child_of'
                   AND o.context_type = r.steps[r.step + 1]
                  WHERE r.step < len(r.steps)
                  GROUP BY r.run, r.ref, r.ref_id HAVING count(DISTINCT o.ck) = 1) c
            WHERE c.run = parent_ref.run AND c.ref = parent_ref.ref AND c.ref_id = parent_ref.ref_id
            """
        )
    # by value: the attribute's values as every source asserts them, per context of the type
    con.execute(
        """
        INSERT INTO parent_ref BY NAME
        WITH refs AS (SELECT DISTINCT run, related_type AS ref, related_id AS ref_id,
                             split_part(related_type, '[', 1) AS ptype,
                             rtrim(split_part(related_type, '[', 2), ']') AS attribute
                      FROM obs_t WHERE relation = 'child_of' AND contains(related_type, '['))
        SELECT r.run, r.ref, r.ref_id, min(o.ck) AS pk, r.ptype, min(o.context_id) AS pid
        FROM refs r JOIN obs_t o ON o.run = r.run AND o.context_type = r.ptype
         AND json_extract_string(o.attributes, '$."' || r.attribute || '"') = r.ref_id
        GROUP BY ALL HAVING count(DISTINCT o.ck) = 1
        """
    )
    # the contexts no lookup found a parent for, with no other claim: not this run's (several matches: kept)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE unclaimed AS
        WITH lookups AS (
            SELECT DISTINCT ck, run, related_id AS value, split_part(related_type, '[', 1) AS ptype,
                   '$."' || rtrim(split_part(related_type, '[', 2), ']') || '"' AS path
            FROM obs_t WHERE relation = 'child_of' AND contains(related_type, '[')
        ), found AS (
            SELECT l.ck, count(x.ck) AS n FROM lookups l
            LEFT JOIN obs_t x ON x.run = l.run AND x.context_type = l.ptype
                             AND json_extract_string(x.attributes, l.path) = l.value
            GROUP BY l.ck
        )
        SELECT ck FROM found WHERE n = 0 AND ck NOT IN (
            SELECT ck FROM obs_t WHERE relation = 'child_of' AND NOT contains(related_type, '['))
        """
    )
    for table in ("obs_t", "ctx", "ctx_id"):
        con.execute(f"DELETE FROM {table} WHERE ck IN (SELECT ck FROM unclaimed)")
    con.execute(
        f"""
        UPDATE obs_t SET related_type = CASE WHEN r.pk IS NULL THEN NULL ELSE r.ptype END,
                         related_id = r.pid, rk = r.pk, relation = CASE WHEN r.pk IS NULL THEN NULL ELSE relation END
        FROM (SELECT o.run, o.related_type AS ref, o.related_id AS ref_id, any_value(p.pk) AS pk,
                     any_value(p.ptype) AS ptype, any_value(p.pid) AS pid
              FROM obs_t o LEFT JOIN parent_ref p ON p.run = o.run AND p.ref = o.related_type
                                                  AND p.ref_id = o.related_id
              WHERE o.relation = 'child_of' AND {_IS_REFERENCE.format(t='o.related_type')}
              GROUP BY ALL) r
        WHERE obs_t.relation = 'child_of' AND obs_t.run = r.run AND obs_t.related_type = r.ref
          AND obs_t.related_id = r.ref_id
        """
    )


def bind(con: duckdb.DuckDBPyConnection, b: Binding) -> int:
    """Add to obs_t the child_of claims binding `b` infers (see the module's policy); returns how many."""
    ctype, ptype = quote_literal(b.context), quote_literal(b.parent)
    wtype = quote_literal(b.through or b.context)
    # the common case (every context's parent named by a record): nothing to infer, so no evidence to gather
    # (its windows and ASOF join are the largest working set of the replay, at 10^5 tasks and up)
    row = con.execute(f"""
        SELECT count(*) FROM ctx c WHERE c.type = {ctype} AND NOT EXISTS (
            SELECT 1 FROM obs_t o WHERE o.ck = c.ck AND o.relation = 'child_of' AND o.related_type = {ptype})
        """).fetchone()
    if not row or not row[0]:
        return 0
    n = len(b.match)
    evidence_keys = ", ".join(
        f"min(json_extract_string(o.attributes, {_path(w)})) AS k{i}, "
        f"count(DISTINCT json_extract_string(o.attributes, {_path(w)})) AS n{i}" for i, w in enumerate(b.match))
    one_value = " AND ".join(f"n{i} = 1" for i in range(n))
    parent_keys = ", ".join(f"json_extract_string(o.event_attributes, {_path(a)}) AS k{i}"
                            for i, a in enumerate(b.match.values()))
    keys = ", ".join(f"k{i}" for i in range(n))
    equal = " AND ".join(f"pe.k{i} = ev.k{i}" for i in range(n))
    events = ", ".join(quote_literal(e) for e in b.events)
    target = (
        f"""SELECT o.ck AS wk, min(o.rk) AS ck FROM obs_t o
            WHERE o.context_type = {wtype} AND o.relation = 'child_of' AND o.related_type = {ctype}
            GROUP BY o.ck HAVING count(DISTINCT o.rk) = 1"""
        if b.through else "SELECT wk, wk AS ck FROM ev"
    )
    note = {"dnpc.binding": "inferred", "dnpc.inferred": b.inferred}
    before = con.execute("SELECT count(*) FROM obs_t").fetchone()
    con.execute(
        f"""
        INSERT INTO obs_t BY NAME
        WITH ev_all AS (
            -- evidence: one value per match attribute, its window, and its first line (the binding's provenance)
            SELECT o.ck AS wk, any_value(o.run) AS run, min(o.t) AS lo, max(o.t) AS hi, {evidence_keys},
                   arg_min(o.source, (o.t, o.line)) AS source, arg_min(o.line, (o.t, o.line)) AS line,
                   arg_min(o.run_key, (o.t, o.line)) AS run_key, arg_min(o.clock, (o.t, o.line)) AS clock
            FROM obs_t o WHERE o.context_type = {wtype} AND o.t IS NOT NULL
            GROUP BY o.ck HAVING {one_value}
        ), ev AS (
            -- windows of equal values that overlap (a pid on two hosts at once) cannot tell their events apart;
            -- touching ones (old logs stamp to the ms) can
            SELECT * FROM ev_all
            QUALIFY coalesce(max(hi) OVER (PARTITION BY run, {keys} ORDER BY lo, hi, wk
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) <= lo, true)
                AND coalesce(lead(lo) OVER (PARTITION BY run, {keys} ORDER BY lo, hi, wk) >= hi, true)
        ), target AS ({target}),
        pe AS (
            SELECT o.ck AS pk, o.run, o.t, o.source, o.line, {parent_keys}
            FROM obs_t o WHERE o.context_type = {ptype} AND o.event IN ({events}) AND o.t IS NOT NULL
        ),
        keyed AS (SELECT pk, count(*) AS n FROM pe WHERE {" OR ".join(f"k{i} IS NOT NULL" for i in range(n))}
                  GROUP BY pk),
        -- each event in the window of equal values that began last before it (windows do not overlap now)
        inside AS (
            SELECT pe.pk, pe.t, pe.source || ':' || pe.line AS event_line, ev.*
            FROM pe ASOF JOIN ev ON pe.run = ev.run AND {equal} AND pe.t >= ev.lo
            WHERE pe.t <= ev.hi
        ),
        cand AS (
            SELECT tg.ck, i.pk, count(*) AS n, min(i.wk) AS wk, arg_min(i.event_line, i.t) AS first,
                   arg_min(i.source, i.lo) AS source, arg_min(i.line, i.lo) AS line,
                   arg_min(i.run_key, i.lo) AS run_key, arg_min(i.clock, i.lo) AS clock
            FROM inside i JOIN target tg USING (wk)
            GROUP BY tg.ck, i.pk
        ),
        one_to_one AS (
            SELECT * FROM cand
            QUALIFY count(*) OVER (PARTITION BY ck) = 1 AND count(*) OVER (PARTITION BY pk) = 1
        )
        SELECT c.run, x.run_key, c.type AS context_type, c.id AS context_id, NULL::VARCHAR AS event,
               x.clock, false AS bounds, {quote_literal(json.dumps(note))} AS attributes,
               json_object('dnpc.binding.name', {quote_literal(b.name)}, 'dnpc.binding.evidence',
                           w.type || ':' || w.id, 'dnpc.binding.matched_events', x.n,
                           'dnpc.binding.first_event', x.first)::VARCHAR AS event_attributes,
               'child_of' AS relation, p.type AS related_type, p.id AS related_id, x.source, x.line,
               {quote_literal(b.source)} AS converter, {quote_literal('binding:' + b.name)} AS rule,
               {int(b.priority)} AS priority, x.ck, x.pk AS rk
        FROM one_to_one x JOIN ctx c ON c.ck = x.ck JOIN ctx p ON p.ck = x.pk JOIN ctx w ON w.ck = x.wk
        -- every event of the parent that carries the values lies inside the matched windows
        JOIN keyed k ON k.pk = x.pk AND k.n = x.n
        -- only where no source claims a parent of the type, nor a child of the type for the parent
        WHERE c.run = p.run
          AND NOT EXISTS (SELECT 1 FROM obs_t o WHERE o.ck = x.ck AND o.relation = 'child_of'
                                                    AND o.related_type = {ptype})
          AND NOT EXISTS (SELECT 1 FROM obs_t o WHERE o.rk = x.pk AND o.relation = 'child_of'
                                                    AND o.context_type = {ctype})
        """
    )
    after = con.execute("SELECT count(*) FROM obs_t").fetchone()
    return (after[0] if after else 0) - (before[0] if before else 0)


def _path(attribute: str) -> str:
    """The JSON path of an attribute name with dots in it ('process.pid' → '$."process.pid"')."""
    return quote_literal('$."' + attribute.replace('"', '\\"') + '"')
