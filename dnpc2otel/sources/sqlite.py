"""SQLite sources (monitoring.db): tables copied as they are into DuckDB, then the definition's queries.

The database is opened read-only (by URI; immutable when even that fails: a writer keeps it locked, or a
journal lies beside it on a read-only medium). Rows travel in Arrow batches; every mapping to observations
then runs as DuckDB SQL. Nothing read from the database becomes SQL text: rows and column names travel as
Arrow data, the file's path as a parameter.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import first_line
from ..tables import OBSERVED
from .definitions import Definition, Query
from .records import SourceFile
from .templates import quote_ident, quote_literal
from .timeparse import to_ns

SQLITE_SCHEMA = "sqlite_source"


BUSY_TIMEOUT_S = 2.0  # a writer's lock is held for a commit; longer means a run is holding it


def open_sqlite(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """Open a database read-only (by URI: nothing is ever written to it or beside it); returns it with a
    note when it could only be read as immutable (locked by a writer, or a journal on a read-only medium)."""
    base = f"file:{urllib.parse.quote(path.resolve().as_posix())}?mode=ro"
    try:
        db = sqlite3.connect(base, uri=True, timeout=BUSY_TIMEOUT_S)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db, None
    except sqlite3.OperationalError as e:
        reason = first_line(e)
    # a database a writer keeps locked, or with a journal we may not touch: read the file as it is on disk
    db = sqlite3.connect(base + "&immutable=1", uri=True)
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if "locked" in reason:
        return db, (f"locked by another process for over {BUSY_TIMEOUT_S:g} s (a run still writing it?): read as it "
                    "is on disk, so the rows of an unfinished write may be missing")
    return db, f"cannot be opened read-only as usual ({reason}): read as it is on disk, without its journal"


def load_sqlite_tables(
    con: duckdb.DuckDBPyConnection,
    db: sqlite3.Connection,
    tables: tuple[str, ...],
    schema: str = SQLITE_SCHEMA,
    columns: dict[str, tuple[str, ...]] | None = None,
) -> tuple[int, list[str]]:
    """Copy the named SQLite tables, as they are (plus `_rowid`), into a DuckDB schema (sqlite_source).

    Rows travel in Arrow batches; every mapping to observations then runs as DuckDB SQL, vectorised.
    Returns (rows copied, warnings). A table the database lacks (an older schema) is absent, unless the
    format declares its `columns`: then every declared column (or table) an older release lacks is NULL,
    so that one query reads every release (Parsl 1.1 has no resource.psutil_cpu_num, say).
    """
    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    con.execute(f"CREATE SCHEMA {schema}")
    warnings: list[str] = []
    try:
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        return 0, [f"not a readable SQLite database ({e})"]
    total = 0
    for table in tables:
        if table not in present:
            continue
        target = f"{schema}.{quote_ident(table)}"
        try:
            cur = db.execute(f"SELECT rowid AS _rowid, * FROM {quote_ident(table)}")
            names = [d[0] for d in cur.description]
            created = False
            while True:
                rows = cur.fetchmany(100_000)
                if not rows:
                    break
                batch = pa.table({n: _arrow_column(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)})
                con.register(f"{schema}_batch", batch)
                if created:
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {schema}_batch")
                else:
                    con.execute(f"CREATE TABLE {target} AS SELECT * FROM {schema}_batch")
                    created = True
                con.unregister(f"{schema}_batch")
                total += len(rows)
            if not created:  # an empty table still has its columns, for the queries to bind
                _empty_table(con, target, names)
        except (sqlite3.Error, duckdb.Error, pa.ArrowException) as e:
            warnings.append(f"table {table} is unreadable ({first_line(e)}); its rows are missing")
    _add_absent_columns(con, schema, columns or {})
    return total, warnings


def _empty_table(con: duckdb.DuckDBPyConnection, target: str, columns: list[str]) -> None:
    """A table with these (VARCHAR) columns and no row, for the queries to bind against; the names come
    from the database, so they travel as Arrow data, not SQL text."""
    con.register("sqlite_empty", pa.table({c: pa.array([], pa.string()) for c in columns}))
    try:
        con.execute(f"CREATE TABLE {target} AS SELECT * FROM sqlite_empty")
    finally:
        con.unregister("sqlite_empty")


def _add_absent_columns(con: duckdb.DuckDBPyConnection, schema: str, columns: dict[str, tuple[str, ...]]) -> None:
    have: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = ?", [schema]
    ).fetchall():
        have.setdefault(table, set()).add(column)
    for table, wanted in columns.items():
        target = f"{schema}.{quote_ident(table)}"
        if table not in have:
            _empty_table(con, target, ["_rowid", *wanted])
            continue
        for c in wanted:
            if c not in have[table]:
                con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(c)} VARCHAR")


def _arrow_column(values: tuple) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # SQLite's loose typing: one column, several types
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def insert_query_rows(
    con: duckdb.DuckDBPyConnection,
    definition: Definition,
    f: SourceFile,
    q: Query,
    default_clock: str,
    schema: str = SQLITE_SCHEMA,
    keyless: bool = False,
) -> int:
    """Run one of the definition's queries (DuckDB SQL over sqlite_source) into `observations`.

    The first of the query and its `alternatives` that binds against the loaded tables is used. Rows without
    a run_key are dropped, unless `keyless` (a JSON document whose path names no run: the core ties it).
    """
    con.execute(f"SET search_path = '{schema},main'")
    try:
        return _insert_query_rows(con, definition, f, q, default_clock, keyless)
    finally:
        con.execute("RESET search_path")


def _insert_query_rows(
    con: duckdb.DuckDBPyConnection, definition: Definition, f: SourceFile, q: Query, default_clock: str,
    keyless: bool = False,
) -> int:
    last: duckdb.Error | None = None
    for sql in (q.sql, *q.alternatives):
        try:
            con.execute(f"CREATE OR REPLACE TEMP VIEW query_rows AS {sql}")
            break
        except duckdb.Error as e:
            last = e
    else:
        assert last is not None
        raise last
    present = {r[0] for r in con.execute("DESCRIBE query_rows").fetchall()}

    def col(name: str) -> str:
        return quote_ident(name) if name in present else "NULL"

    related = f"coalesce({col('parent')}, {col('link')})"
    select = f"""
        SELECT {col('run_key')}::VARCHAR AS run_key,
               split_part(context, ':', 1) AS context_type,
               substr(context, strpos(context, ':') + 1) AS context_id,
               {col('event')}::VARCHAR AS event,
               {to_ns(f"{col('time_epoch')}::VARCHAR", 'epoch')} AS time_ns,
               {to_ns(f"{col('time_local')}::VARCHAR", 'timestamp')} AS local_ns,
               coalesce({col('clock')}::VARCHAR, {quote_literal(default_clock)}) AS clock,
               coalesce(TRY_CAST({col('bounds')} AS BOOLEAN), true) AS bounds,
               -- merge-patching into {{}} drops the members whose value is null
               json_merge_patch('{{}}', coalesce({col('attributes')}::JSON, '{{}}'))::VARCHAR AS attributes,
               json_merge_patch('{{}}', coalesce({col('event_attributes')}::JSON, '{{}}'))::VARCHAR
                   AS event_attributes,
               CASE WHEN {col('parent')} IS NOT NULL THEN 'child_of'
                    WHEN {col('link')} IS NOT NULL THEN {col('relation')}::VARCHAR
                    WHEN {col('alias')} IS NOT NULL THEN 'alias' END AS relation,
               CASE WHEN {related} IS NOT NULL THEN split_part({related}, ':', 1)
                    WHEN {col('alias')} IS NOT NULL THEN 'run' END AS related_type,
               CASE WHEN {related} IS NOT NULL THEN substr({related}, strpos({related}, ':') + 1)
                    ELSE {col('alias')}::VARCHAR END AS related_id,
               $source::VARCHAR AS source,
               TRY_CAST({col('line')} AS BIGINT) AS line,
               {quote_literal(definition.name)} AS converter,
               {quote_literal(q.name)} AS rule,
               {definition.priority} AS priority
        FROM (SELECT *, {col('context')}::VARCHAR AS context FROM query_rows)
        WHERE context IS NOT NULL AND ({col('run_key')} IS NOT NULL OR {str(keyless).lower()})
    """
    row = con.execute(f"INSERT INTO {OBSERVED}.observations BY NAME {select}", {"source": f.rel}).fetchone()
    return int(row[0]) if row else 0
