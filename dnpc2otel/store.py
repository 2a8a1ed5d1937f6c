"""The DuckDB output: the documented tables (see README "DuckDB contract"), written atomically.

A new database is built in a temporary file beside the target and renamed into place, so a failed
replay never leaves a half-written file. Replaying into an existing database replaces, inside one
transaction, every row of the runs being replayed (keyed by trace id): nothing is duplicated.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from . import __version__
from .errors import UserError, first_line
from .templates import quote_ident, quote_literal

SCHEMA_VERSION = 2

TABLES: dict[str, str] = {
    "spans": """(
        trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, name VARCHAR, service_name VARCHAR,
        context_type VARCHAR, start_time_unix_nano BIGINT, end_time_unix_nano BIGINT,
        status_code VARCHAR, status_message VARCHAR, attributes JSON)""",
    "span_links": """(
        trace_id VARCHAR, span_id VARCHAR, linked_trace_id VARCHAR, linked_span_id VARCHAR, attributes JSON)""",
    "disagreements": """(
        trace_id VARCHAR, span_id VARCHAR, context_type VARCHAR, context_id VARCHAR, kind VARCHAR, subject VARCHAR,
        size_ms DOUBLE, detail JSON)""",
    "clocks": """(
        trace_id VARCHAR, clock VARCHAR, reference VARCHAR, pairs BIGINT, lower_ms DOUBLE, upper_ms DOUBLE,
        skew_ms DOUBLE, corrected BOOLEAN)""",
    "runs": """(
        trace_id VARCHAR, run_id VARCHAR, run_dir VARCHAR, root VARCHAR, utc_offset_seconds INTEGER,
        timezone VARCHAR, offset_source VARCHAR, start_time_unix_nano BIGINT, end_time_unix_nano BIGINT,
        spans BIGINT)""",
    "observations": """(
        trace_id VARCHAR, span_id VARCHAR, time_unix_nano BIGINT, run_key VARCHAR, context_type VARCHAR,
        context_id VARCHAR, event VARCHAR, time_ns BIGINT, local_ns BIGINT, clock VARCHAR, bounds BOOLEAN,
        attributes JSON,
        event_attributes JSON, relation VARCHAR, related_type VARCHAR, related_id VARCHAR, source VARCHAR, line BIGINT,
        converter VARCHAR, rule VARCHAR, priority INTEGER)""",
    "sources": """(
        root VARCHAR, source VARCHAR, converter VARCHAR, format VARCHAR, bytes BIGINT, lines BIGINT,
        records BIGINT, observations BIGINT, not_understood BIGINT, invalid_bytes BOOLEAN, warning VARCHAR)""",
}

# what each table is filled from (temp tables of the replay connection), in a stable row order
FILL: dict[str, str] = {
    "spans": """SELECT trace_id, span_id, parent_span_id, name, service_name, context_type, start_time_unix_nano,
                       end_time_unix_nano, status_code, status_message, attributes
                FROM spans_out ORDER BY trace_id, start_time_unix_nano, span_id""",
    "span_links": """SELECT * FROM span_links_out ORDER BY trace_id, span_id, linked_span_id, attributes::VARCHAR""",
    "disagreements": """SELECT * EXCLUDE (ck) FROM disagreements_out
                         ORDER BY trace_id, kind, context_type, context_id, subject""",
    "clocks": """SELECT s.trace_id, c.* EXCLUDE (run) FROM clocks_out c
                  JOIN (SELECT DISTINCT run, trace_id FROM ctx_id) s USING (run) ORDER BY s.trace_id, c.clock""",
    "runs": """SELECT trace_id, run_id, run_dir, {root} AS root, utc_offset_seconds, timezone, offset_source,
                      start_time_unix_nano, end_time_unix_nano, spans FROM runs_out ORDER BY trace_id""",
    "observations": """SELECT i.trace_id, i.span_id, o.t AS time_unix_nano, o.run_key, o.context_type, o.context_id,
                              o.event, o.time_ns, o.local_ns, o.clock, o.bounds, o.attributes,
                              o.event_attributes, o.relation, o.related_type, o.related_id, o.source, o.line,
                              o.converter, o.rule, o.priority
                       FROM obs_t o JOIN ctx_id i USING (ck)""",
    "sources": """SELECT {root} AS root, source, converter, format, bytes, lines, records, observations,
                         not_understood, invalid_bytes, warning FROM sources_out ORDER BY source""",
}

VIEWS = {
    # every observation that is an event, with its provenance: a view, so that the facts are stored once
    "span_events": """
        SELECT trace_id, span_id, time_unix_nano, event AS name,
               json_merge_patch(json_merge_patch(attributes, event_attributes),
                   json_object('dnpc.source', source, 'dnpc.line', line, 'dnpc.converter', converter,
                               'dnpc.rule', rule, 'dnpc.clock', clock)) AS attributes
        FROM observations WHERE event IS NOT NULL AND time_unix_nano IS NOT NULL""",
    # one row per task with its duration and outcome: the usual first question
    "tasks": """
        SELECT trace_id, span_id, name AS app,
               CAST(json_extract(attributes, '$."parsl.task.id"') AS BIGINT) AS task_id,
               json_extract_string(attributes, '$."parsl.executor.label"') AS executor,
               start_time_unix_nano, end_time_unix_nano,
               (end_time_unix_nano - start_time_unix_nano) / 1e9 AS duration_s, status_code,
               json_extract_string(attributes, '$."parsl.task.state"') AS final_state
        FROM spans WHERE context_type = 'task'""",
    "tries": """
        SELECT s.trace_id, s.span_id, s.parent_span_id AS task_span_id,
               CAST(json_extract(s.attributes, '$."parsl.task.id"') AS BIGINT) AS task_id,
               CAST(json_extract(s.attributes, '$."parsl.try.id"') AS BIGINT) AS try_id,
               json_extract_string(s.attributes, '$."parsl.executor.label"') AS executor,
               json_extract_string(s.attributes, '$."host.name"') AS host,
               s.start_time_unix_nano, s.end_time_unix_nano,
               (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9 AS duration_s, s.status_code,
               json_extract_string(s.attributes, '$."parsl.try.final_state"') AS final_state
        FROM spans s WHERE s.context_type = 'try'""",
}


def _create_schema(con: duckdb.DuckDBPyConnection, db: str) -> None:
    con.execute(f"CREATE TABLE {db}.dnpc2otel_meta (key VARCHAR, value VARCHAR)")
    con.execute(
        f"INSERT INTO {db}.dnpc2otel_meta VALUES ('schema_version', ?), ('dnpc2otel_version', ?)",
        [str(SCHEMA_VERSION), __version__],
    )
    for table, cols in TABLES.items():
        con.execute(f"CREATE TABLE {db}.{table} {cols}")


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


def summarise(path: Path, trace_ids: list[str], summaries: list[tuple[str, str]]) -> dict[str, str]:
    """Run the definitions' summary queries over the replayed runs (table `replayed` lists their traces)."""
    out: dict[str, str] = {}
    if not summaries:
        return out
    with duckdb.connect(str(path)) as c:
        c.execute("SET enable_progress_bar = false")
        c.execute("CREATE TEMP TABLE replayed AS SELECT unnest(?::VARCHAR[]) AS trace_id", [trace_ids])
        for label, sql in summaries:
            row = c.execute(sql).fetchone()
            if row and row[0] is not None:
                out[label] = str(row[0])
    return out


def write(con: duckdb.DuckDBPyConnection, target: Path, root: str, views: list[tuple[str, str]] | None = None) -> None:
    """Write the replay's temp tables into `target` (new, or merged into an existing dnpc2otel DB)."""
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
            _fill(con, "out", root)
        finally:
            con.execute("DETACH out")
        _create_views(tmp, views or [])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)


def _fill(con: duckdb.DuckDBPyConnection, db: str, root: str) -> None:
    # row order is not part of the content: let DuckDB write the large tables in parallel
    con.execute("SET preserve_insertion_order = false")
    try:
        for table, sql in FILL.items():
            con.execute(f"INSERT INTO {db}.{table} {sql.format(root=quote_literal(root))}")
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
            for table in TABLES:
                if table == "sources":
                    con.execute(f"DELETE FROM out.sources WHERE root = {quote_literal(root)}")
                else:
                    con.execute(f"DELETE FROM out.{table} WHERE trace_id IN (SELECT trace_id FROM runs_out)")
            _fill(con, "out", root)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DETACH out")

