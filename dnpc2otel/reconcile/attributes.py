"""Attributes: for each key the latest observed value wins (ties: the higher-priority source, then the
earlier line, then the value itself); every value stays in the observations.

A failed context whose sources give no reason takes the reason of its failed child that ended last: a
task that failed after its retries carries the exception of the try that failed (its sources often say
only "failed after 2 retry attempts"). The inherited status message (and `exception.type`, where the
parent has none) says where it came from in `dnpc.status.from` ("type:id" of the child).
"""

from __future__ import annotations

import duckdb

MAX_DEPTH = 5  # a reason climbs at most this many levels (executor task → try → task)


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
    inherit_failure_reason(con)


def inherit_failure_reason(con: duckdb.DuckDBPyConnection) -> None:
    """Give each failed context without a status message the message of its last-ending failed child
    (primary parent only: ctx_parent); repeated so that a reason climbs several levels."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE ctx_last_seen AS
        SELECT ck, max(t) AS t FROM obs_t WHERE t IS NOT NULL GROUP BY ck
        """
    )
    for _ in range(MAX_DEPTH):
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE inherited AS
            WITH failed AS (
                SELECT ck FROM ctx_attr
                WHERE k = 'otel.status_code' AND upper(json_extract_string(v, '$')) = 'ERROR'
            ), described AS (
                SELECT ck, v FROM ctx_attr WHERE k = 'otel.status_description'
            ), reason AS (   -- failed children with a message, the one that ended last first
                SELECT p.pk, c.ck, d.v,
                       row_number() OVER (PARTITION BY p.pk ORDER BY coalesce(ls.t, 0) DESC, c.type, c.id) AS n,
                       c.type || ':' || c.id AS child
                FROM ctx_parent p JOIN ctx c USING (ck) JOIN failed f USING (ck) JOIN described d USING (ck)
                LEFT JOIN ctx_last_seen ls USING (ck)
                WHERE p.pk IS NOT NULL AND NOT p.orphan
            )
            SELECT r.pk, r.ck AS child_ck, r.v, r.child FROM reason r
            JOIN failed f ON f.ck = r.pk
            WHERE r.n = 1 AND r.pk NOT IN (SELECT ck FROM described)
            """
        )
        row = con.execute("SELECT count(*) FROM inherited").fetchone()
        if not row or row[0] == 0:
            break
        con.execute(
            """
            INSERT INTO ctx_attr
            SELECT pk, 'otel.status_description', v FROM inherited
            UNION ALL
            SELECT pk, 'dnpc.status.from', to_json(child) FROM inherited
            UNION ALL
            SELECT i.pk, 'exception.type', a.v FROM inherited i
            JOIN ctx_attr a ON a.ck = i.child_ck AND a.k = 'exception.type'
            WHERE i.pk NOT IN (SELECT ck FROM ctx_attr WHERE k = 'exception.type')
            """
        )
    con.execute("DROP TABLE IF EXISTS inherited")
    con.execute("DROP TABLE IF EXISTS ctx_last_seen")
