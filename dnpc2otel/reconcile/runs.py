"""Runs: which run each observation belongs to, and the run table.

A source names its run either by the workflow system's run id or by run directory ('dir:000'); `alias`
observations (parsl.log's "Run id is", monitoring.db's workflow.rundir) join the two. A run's canonical key is
its run id when any source gives it. A file that knows no run (TaskVine's shared logs) goes to the run
whose time window holds its first record, else the latest run started before it, else the only run there is.
"""

from __future__ import annotations

import duckdb

from ..sources.definitions import System
from ..sources.templates import quote_literal
from ..tables import OBSERVED


def assign(
    con: duckdb.DuckDBPyConnection, run_dirs: list[str] | None, root: str, present: tuple[str, ...] = ()
) -> None:
    """Create run_map, run_dir, source_run, run_seed and the view obs (observations with their run).

    `present`: the run directories of the run_dir. When there is just one, it is a run even if no source
    names it (an empty parsl.log), so that files that name no run have a run to belong to."""
    only = f"UNION SELECT {quote_literal('dir:' + present[0])}" if len(present) == 1 else ""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE run_map AS
        WITH pairs AS (
            SELECT DISTINCT run_key AS a, related_id AS b FROM {OBSERVED}.observations
            WHERE relation = 'alias' AND run_key IS NOT NULL AND related_id IS NOT NULL
        ), adj AS (SELECT a AS k, b AS o FROM pairs UNION SELECT b, a FROM pairs),
        keys AS (SELECT DISTINCT run_key AS k FROM {OBSERVED}.observations WHERE run_key IS NOT NULL {only})
        SELECT keys.k AS run_key,
               coalesce(CASE WHEN NOT starts_with(keys.k, 'dir:') THEN keys.k END,
                        min(adj.o) FILTER (WHERE NOT starts_with(adj.o, 'dir:')), keys.k) AS run
        FROM keys LEFT JOIN adj ON adj.k = keys.k GROUP BY keys.k
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE run_dir AS
        SELECT DISTINCT m.run, substr(k, 5) AS dir FROM run_map m,
               (SELECT run_key AS k, run_key AS r FROM run_map
                UNION SELECT related_id, run_key FROM {OBSERVED}.observations WHERE relation = 'alias') x
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
        f"""
        CREATE OR REPLACE TEMP TABLE source_run AS
        WITH files AS (SELECT source, min(time_ns) AS t0 FROM {OBSERVED}.observations
                       WHERE run_key IS NULL GROUP BY source),
        windows AS (SELECT m.run, min(o.time_ns) AS s, max(o.time_ns) AS e
                    FROM {OBSERVED}.observations o JOIN run_map m USING (run_key)
                    WHERE o.time_ns IS NOT NULL GROUP BY m.run)
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
        SELECT m.run, o.* FROM {OBSERVED}.observations o JOIN run_map m USING (run_key) WHERE {keep}
        UNION ALL
        SELECT m.run, o.* FROM {OBSERVED}.observations o JOIN source_run m USING (source)
        WHERE o.run_key IS NULL AND {keep}
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


def run_table(con: duckdb.DuckDBPyConnection, system: System) -> None:
    """Create runs_out: one row per run, with its trace, offset and root span."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE runs_out AS
        SELECT s.run AS run_key,
               CASE WHEN starts_with(s.run, 'dir:') THEN NULL ELSE s.run END AS run_id,
               (SELECT string_agg(dir, ',' ORDER BY dir) FROM run_dir d WHERE d.run = s.run) AS run_dir,
               i.trace_id,
               -- a zone name has no single offset: the one in force at the run's first local time
               -- (from the zone's rules, not from the resolved times: skew correction may have moved those)
               (coalesce(c.offset_ns, f.local_ns - epoch_ns(timezone(c.tz, make_timestamp(f.local_ns // 1000))))
                // 1000000000)::INTEGER AS utc_offset_seconds, c.tz AS timezone, c.offset_source,
               w.start_time_unix_nano, w.end_time_unix_nano,
               (SELECT count(*) FROM spans_out x WHERE x.run = s.run) AS spans,
               {quote_literal(system.service_namespace) if system.service_namespace else 'NULL'}::VARCHAR
                 AS service_namespace
        FROM run_seed s
        JOIN ctx_id i ON i.run = s.run AND i.type = {quote_literal(system.root_context)} AND i.id = ''
        JOIN run_clock c ON c.run = s.run
        JOIN spans_out w ON w.run = s.run AND w.span_id = i.span_id
        LEFT JOIN (SELECT run, min(local_ns) AS local_ns FROM obs_t WHERE time_ns IS NULL GROUP BY run) f
          ON f.run = s.run
        """
    )

