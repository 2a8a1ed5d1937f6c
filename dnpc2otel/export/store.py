"""The DuckDB output: the declared tables (dnpc2otel.tables.OUTPUT), written atomically.

A new database is built in a temporary file beside the target and renamed into place, so a failed
replay never leaves a half-written file. Replaying into an existing database replaces, inside one
transaction, every row of the runs being replayed (keyed by trace id): nothing is duplicated.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from .. import __version__, analysis
from ..errors import UserError, first_line
from ..sources.templates import quote_ident, quote_literal
from ..tables import OUTPUT, RECONCILED, SOURCES

SCHEMA_VERSION = 4  # 3: runs.service_namespace, sources.records_used; 4: clocks.consistent, a count of invalid bytes

VIEWS = {
    # every observation that is an event, with its provenance: a view, so that the facts are stored once
    "span_events": """
        SELECT trace_id, span_id, time_unix_nano, event AS name,
               json_merge_patch(json_merge_patch(attributes, event_attributes),
                   json_object('dnpc.source', source, 'dnpc.line', line, 'dnpc.converter', converter,
                               'dnpc.rule', rule, 'dnpc.clock', clock)) AS attributes
        FROM observations WHERE event IS NOT NULL AND time_unix_nano IS NOT NULL""",
}


def write(con: duckdb.DuckDBPyConnection, target: Path, root: str, views: list[tuple[str, str]] | None = None) -> None:
    """Write the `reconciled` tables of `con` into `target` (new, or merged into an existing dnpc2otel DB)."""
    target = target.resolve()
    if target.exists():
        _merge(con, target, root)
        _create_views(target, views or [])
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        con.execute(f"ATTACH {quote_literal(str(tmp))} AS out")
        try:
            _create_schema(con, "out")
            _fill(con, "out")
        finally:
            con.execute("DETACH out")
        _create_views(tmp, views or [])
        os.replace(tmp, target)
    except duckdb.IOException as e:  # a full disk, a failed checkpoint: the file, not a bug of ours
        raise UserError(f"{target}: cannot write the DuckDB file ({first_line(e)}); nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)


def summarise(path: Path, trace_ids: list[str], summaries: list[tuple[str, str]], memory_limit: str) -> dict[str, str]:
    """Run the definitions' summary queries over the replayed runs (table `replayed` lists their traces), within
    the replay's memory limit (DuckDB's own default, 80 % of RAM, took 6 GB at 10^6 tasks)."""
    out: dict[str, str] = {}
    if not summaries:
        return out
    with duckdb.connect(str(path)) as c:
        c.execute("SET enable_progress_bar = false")
        c.execute("SET memory_limit = ?", [memory_limit])
        c.execute("CREATE TEMP TABLE replayed AS SELECT unnest(?::VARCHAR[]) AS trace_id", [trace_ids])
        for label, sql in summaries:
            try:
                row = c.execute(sql).fetchone()
            except duckdb.OutOfMemoryException:  # the database is whole: say what is missing and how to get it
                out[label] = (f"not computed: needs more than the memory limit of {memory_limit} (dnpc2otel replay "
                              "--memory-limit, or query the views of the database)")
                continue
            if row and row[0] is not None:
                out[label] = str(row[0])
    return out


def _create_schema(con: duckdb.DuckDBPyConnection, db: str) -> None:
    con.execute(f"CREATE TABLE {db}.dnpc2otel_meta (key VARCHAR, value VARCHAR)")
    con.execute(
        f"INSERT INTO {db}.dnpc2otel_meta VALUES ('schema_version', ?), ('dnpc2otel_version', ?)",
        [str(SCHEMA_VERSION), __version__],
    )
    for table in OUTPUT:
        con.execute(table.ddl(db))


def _create_views(path: Path, extra: list[tuple[str, str]]) -> None:
    # views are stored with their SQL; create them from a connection to the file itself so that they
    # refer to its tables, not to an alias of the replay connection. Converter definitions add their own.
    with duckdb.connect(str(path)) as c:
        c.execute("SET enable_progress_bar = false")
        for name, sql in [*VIEWS.items(), *extra]:
            try:
                c.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {sql}")
            except duckdb.Error as e:
                raise UserError(f"view {name} of a converter definition does not bind: {first_line(e)}") from None
        analysis.create(c)  # schema `analysis`: the views of dnpc2otel/analysis, over the tables just written


def _fill(con: duckdb.DuckDBPyConnection, db: str) -> None:
    # row order is not part of the content: let DuckDB write the large tables in parallel
    con.execute("SET preserve_insertion_order = false")
    try:
        for table in OUTPUT:
            order = f" ORDER BY {table.order_by}" if table.order_by else ""
            cols = ", ".join(table.column_names)
            con.execute(f"INSERT INTO {db}.{table.name} ({cols}) SELECT {cols} FROM {RECONCILED}.{table.name}{order}")
    finally:
        con.execute("RESET preserve_insertion_order")


def _merge(con: duckdb.DuckDBPyConnection, target: Path, root: str) -> None:
    try:
        con.execute(f"ATTACH {quote_literal(str(target))} AS out")
    except duckdb.Error as e:
        raise UserError(
            f"{target}: exists but is not a DuckDB database ({first_line(e)}); choose another --duckdb"
        ) from None
    try:
        row = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'out' AND table_name = 'dnpc2otel_meta'"
        ).fetchone()
        if not row or row[0] == 0:
            raise UserError(f"{target}: exists but was not written by dnpc2otel; choose another --duckdb")
        version = con.execute("SELECT value FROM out.dnpc2otel_meta WHERE key = 'schema_version'").fetchone()
        if not version or version[0] != str(SCHEMA_VERSION):
            raise UserError(
                f"{target}: written with another dnpc2otel schema ({version[0] if version else '?'}, this is "
                f"{SCHEMA_VERSION}); replay into a new file"
            )
        con.execute("BEGIN TRANSACTION")
        try:
            for table in OUTPUT:
                if table is SOURCES:
                    con.execute(f"DELETE FROM out.sources WHERE root = {quote_literal(root)}")
                else:
                    con.execute(
                        # the runs' traces and those beside them (a campaign's)
                        f"DELETE FROM out.{table.name} WHERE trace_id IN (SELECT trace_id FROM {RECONCILED}.runs "
                        f"UNION SELECT trace_id FROM {RECONCILED}.spans)"
                    )
            _fill(con, "out")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DETACH out")
