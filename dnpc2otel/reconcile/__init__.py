"""Stage 2, reconcile: `observed.observations` → the `reconciled` tables (spans, links, disagreements, …).

All in DuckDB SQL, over TEMP tables of this stage; the steps run in this order because each needs what the
ones before it made:

1. runs.assign           run_map, run_dir, source_run, run_seed, view obs   which run each observation is of
2. clock.infer_offsets   run_clock, clock_offset                            UTC offsets of naive local times
3. _resolve_times        obs_t                                              every observation's UTC time, keys
4. contexts.identify     ctx, ctx_id                                        contexts, trace and span ids
5. contexts.choose_parents  parent_cand, parent_rank, ctx_parent           primary parent, second parents
6. skew.measure          clocks_out (shifts obs_t.t if correcting)          needs parents (causal pairs)
7. attributes.choose     kv, ctx_attr                                       the winning value per key
8. disagreements.find    disagreements_out                                  needs 1-7; bounds reads `incomplete`
9. bounds.bound          ctx_bounds                                         start and end of every context
9b. nesting.nest         ctx_nesting (updates ctx_bounds)                   children inside parents, no instants
10. spans.spans, links   spans_out, span_links_out, dangling_links          processes (resources), status
11. runs.run_table       runs_out                                           needs the root spans
12. _publish             reconciled.*                                       the declared output tables
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import Catalog
from ..sources.templates import quote_literal
from ..tables import (
    CLOCKS,
    DANGLING_LINKS,
    DISAGREEMENTS,
    OBSERVED,
    RECONCILED,
    RUNS,
    SOURCES,
    SPAN_LINKS,
    SPAN_OBSERVATIONS,
    SPANS,
    create_stage,
    insert,
)
from . import attributes, bounds, clock, contexts, disagreements, nesting, runs, skew, spans

DEFAULT_THRESHOLD_MS = disagreements.DEFAULT_THRESHOLD_MS


def reconcile(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    run_dirs: list[str] | None,
    root: str,
    timezone: str | None = None,
    threshold_ms: float = DEFAULT_THRESHOLD_MS,
    correct_skew: bool = False,
    present: tuple[str, ...] = (),
) -> None:
    """Fill the `reconciled` tables from the `observed` ones (run_dirs: the selected run directories;
    present: every run directory of the run_dir)."""
    system, types = catalog.system, catalog.types
    runs.assign(con, run_dirs, root, present)
    clock.infer_offsets(con, timezone, system.reference_clock)
    if timezone is None:
        clock.infer_clock_offsets(con, system.reference_clock)
    else:  # a zone given by the user holds for every host
        con.execute("CREATE OR REPLACE TEMP TABLE clock_offset (run VARCHAR, clock VARCHAR, offset_ns BIGINT)")
    _resolve_times(con)
    contexts.declare_types(con, types)
    contexts.identify(con, system)
    contexts.choose_parents(con, system)
    skew.measure(con, catalog.causality, correct_skew, system.reference_clock)
    attributes.choose(con)
    disagreements.find(con, types, threshold_ms)
    bounds.bound(con, system)
    nesting.nest(con)
    spans.spans(con, types, system)
    spans.links(con)
    runs.run_table(con, system)
    _publish(con, root)


def _resolve_times(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE obs_t AS
        SELECT o.*, {clock.resolved_time_sql('o')} AS t,
               -- integer keys of the context and of the related one: joins and groupings on keys, not strings
               {contexts.key_sql('o.run', 'o.context_type', 'o.context_id')} AS ck,
               CASE WHEN o.related_id IS NOT NULL AND o.relation <> 'alias'
                    THEN {contexts.key_sql('o.run', 'o.related_type', 'o.related_id')} END AS rk
        FROM obs o JOIN run_clock c USING (run) LEFT JOIN clock_offset co USING (run, clock)
        """
    )


def _publish(con: duckdb.DuckDBPyConnection, root: str) -> None:
    """The stage's hand-over: the declared tables, filled from this stage's scratch tables."""
    create_stage(con, RECONCILED)
    columns = ", ".join(c for c in SPANS.column_names)
    insert(con, RECONCILED, SPANS, f"SELECT {columns} FROM spans_out")
    insert(con, RECONCILED, SPAN_LINKS, "SELECT * FROM span_links_out")
    insert(con, RECONCILED, DISAGREEMENTS, "SELECT * EXCLUDE (ck) FROM disagreements_out")
    insert(con, RECONCILED, CLOCKS, """
        SELECT s.trace_id, c.* EXCLUDE (run) FROM clocks_out c
        JOIN (SELECT DISTINCT run, trace_id FROM ctx_id) s USING (run)""")
    insert(con, RECONCILED, RUNS, f"SELECT * EXCLUDE (run_key), {quote_literal(root)} AS root FROM runs_out")
    insert(con, RECONCILED, SPAN_OBSERVATIONS, """
        SELECT i.trace_id, i.span_id, o.t AS time_unix_nano, o.* EXCLUDE (run, t, ck, rk)
        FROM obs_t o JOIN ctx_id i USING (ck)""")
    insert(con, RECONCILED, SOURCES, f"SELECT * FROM {OBSERVED}.{SOURCES.name}")
    insert(con, RECONCILED, DANGLING_LINKS, "SELECT * FROM dangling_links")
