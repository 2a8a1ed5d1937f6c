"""Stage 4, analysis: views and table macros over the DuckDB file (schema `analysis`) that answer where
the time went. They read only the file's declared tables, so they work on any file this version writes.
Every module below is written against roles and milestones; `vocabulary` alone names Parsl's words.

    vocabulary     the workflow system's words (roles of context types, milestone events, attributes)
    contexts       every span with its role and role-neutral columns; where each try ran
    breakdown      each task's and try's life cut into parts that add up to its duration
    states         time in each part, per app: percentiles and totals
    concurrency    tasks in each part over time
    utilisation    busy and idle slots of nodes and blocks over time; block queue wait
    failures       failed tries and their cost; dependency-failure cascades
    resources      monitoring's resource samples per try and app, against what was asked for
    critical_path  the chain of dependencies that set the run's length
    compare        two runs side by side; the runs of a campaign
    session        `dnpc2otel.open`: a connection with the views ready
    shell          `dnpc2otel sql`: statements in, tables / CSV / JSON out

The views most others read are materialized (tables computed when the file is written, see
tables.View); `create` (re)makes them all, and store.write calls it after every replay.
"""

from __future__ import annotations

import duckdb

from ..tables import ANALYSIS, View
from . import breakdown, compare, concurrency, contexts, critical_path, failures, resources, states, utilisation

# in creation order: a view may read those before it
VIEWS: tuple[View, ...] = (
    *contexts.VIEWS, *breakdown.VIEWS, *states.VIEWS, *concurrency.VIEWS, *utilisation.VIEWS,
    *failures.VIEWS, *resources.VIEWS, *critical_path.VIEWS, *compare.VIEWS,
)
# stored in dnpc2otel_meta: a file whose views are older is given the current ones when opened
VERSION = "1"


def create(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the analysis schema's views and macros in the dnpc2otel database `con` is connected to."""
    con.execute(f"DROP SCHEMA IF EXISTS {ANALYSIS} CASCADE")
    con.execute(f"CREATE SCHEMA {ANALYSIS}")
    for v in VIEWS:
        con.execute(v.create(ANALYSIS))
    con.execute("DELETE FROM dnpc2otel_meta WHERE key = 'analysis_version'")
    con.execute("INSERT INTO dnpc2otel_meta VALUES ('analysis_version', ?)", [VERSION])


def written_by_us(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'dnpc2otel_meta'"
    ).fetchall()
    return bool(row and row[0][0])


def present(con: duckdb.DuckDBPyConnection) -> bool:
    """Does the database hold this version's analysis views?"""
    if not written_by_us(con):
        return False
    v = con.execute("SELECT value FROM dnpc2otel_meta WHERE key = 'analysis_version'").fetchall()
    return bool(v) and v[0][0] == VERSION
