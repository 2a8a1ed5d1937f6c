"""Attributes: for each key the latest observed value wins (ties: the higher-priority source, then the
earlier line, then the value itself); every value stays in the observations."""

from __future__ import annotations

import duckdb


def choose(con: duckdb.DuckDBPyConnection) -> None:
    """Create kv (every attribute observation) and ctx_attr (the winning value per context and key)."""
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


