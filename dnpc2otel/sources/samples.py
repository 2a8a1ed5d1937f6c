"""Self-check of converter definitions: every rule's sample lines must produce what they promise.

Like lnav's format tests: a definition that no longer matches its own samples fails loudly instead of
silently converting nothing. `dnpc2otel converters --check` runs this over built-in and user definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..errors import first_line
from ..tables import OBSERVED, create_stage
from .definitions import Definition
from .records import SourceFile
from .rules import emit_rule, match_rule
from .sqlite import insert_query_rows, load_sqlite_tables
from .templates import quote_ident

_SAMPLE_KEYS = {"message", "expect", "release", "attributes", "note"}


@dataclass
class SampleResult:
    definition: str
    rule: str
    message: str
    ok: bool
    detail: str = ""


def check_definition(definition: Definition) -> list[SampleResult]:
    results: list[SampleResult] = []
    con = duckdb.connect()
    try:
        _check_sql_compiles(con, definition, results)
        _check_views_bind(con, definition, results)
        for sample in definition.samples:
            results += _check_sqlite_sample(con, definition, sample)
        for rule in definition.rules:
            if not rule.samples:
                results.append(SampleResult(definition.name, rule.name, "", False, "rule has no sample lines"))
            for sample in rule.samples:
                results.append(_check_sample(con, definition, rule, sample))
    finally:
        con.close()
    return results


def _check_sql_compiles(con: duckdb.DuckDBPyConnection, definition: Definition, results: list) -> None:
    for fmt in definition.formats:
        if fmt.record:
            try:
                con.execute("SELECT regexp_matches('x', ?)", [fmt.record]).fetchone()
            except duckdb.Error as e:
                results.append(SampleResult(definition.name, f"format {fmt.name}", "", False, f"record pattern: {e}"))


def _check_views_bind(con: duckdb.DuckDBPyConnection, definition: Definition, results: list) -> None:
    """A definition's views must bind against the output tables (an empty database of the declared schema)."""
    if not definition.views:
        return
    from ..tables import OUTPUT

    con.execute("ATTACH ':memory:' AS view_check")
    try:
        for table in OUTPUT:
            con.execute(table.ddl("view_check.main"))
        con.execute("USE view_check")
        for name, sql in definition.views:
            try:
                con.execute(f"CREATE VIEW {quote_ident(name)} AS {sql}")
                con.execute(f"SELECT * FROM {quote_ident(name)} LIMIT 0")
                results.append(SampleResult(definition.name, f"view {name}", "", True))
            except duckdb.Error as e:
                detail = f"does not bind: {first_line(e)}"
                results.append(SampleResult(definition.name, f"view {name}", "", False, detail))
    finally:
        con.execute("USE memory")
        con.execute("DETACH view_check")


def _check_sample(con: duckdb.DuckDBPyConnection, definition: Definition, rule, sample: dict) -> SampleResult:
    message = sample.get("message", "")
    # record fields, and path groups of the file the sample came from (executor label, block, …)
    fields = {k: sample.get(k) for k in definition.record_fields if k != "message"}
    fields.update({k: str(v) for k, v in sample.items() if k not in fields and k not in _SAMPLE_KEYS})
    create_stage(con, OBSERVED)
    cols = ", ".join(
        ["'sample' AS source", "'dir:000' AS run_key", "1::BIGINT AS line", "1000000000::BIGINT AS time_ns",
         "NULL::BIGINT AS local_ns", "'dfk' AS clock", "?::VARCHAR AS message"]
        + [f"?::VARCHAR AS {quote_ident(k)}" for k in fields]
        + ["true AS is_record", "''::VARCHAR AS text"]
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE rec AS SELECT {cols}", [message, *fields.values()])
    tables = {r.name: f"s_{i}" for i, r in enumerate(definition.rules)}
    for t in tables.values():
        con.execute(f"DROP TABLE IF EXISTS {t}")
    created: set[str] = set()
    try:
        match_rule(con, rule, tables[rule.name], created)
        n = emit_rule(con, definition, rule, tables, created)
    except duckdb.Error as e:
        return SampleResult(definition.name, rule.name, message, False, f"SQL error: {first_line(e)}")
    expect = int(sample.get("expect", 1))
    if n != expect:
        return SampleResult(definition.name, rule.name, message, False, f"expected {expect} observations, got {n}")
    want = sample.get("attributes", {})
    if want:
        got: dict = {}
        for (a,) in con.execute(f"SELECT attributes FROM {OBSERVED}.observations ORDER BY rowid").fetchall():
            got.update(json.loads(a))
        for k, v in want.items():
            if got.get(k) != v:
                return SampleResult(
                    definition.name, rule.name, message, False, f"attribute {k}: expected {v!r}, got {got.get(k)!r}"
                )
    return SampleResult(definition.name, rule.name, message, True)


def _check_sqlite_sample(con: duckdb.DuckDBPyConnection, definition: Definition, sample: dict) -> list[SampleResult]:
    """Build the sample database in memory, load it as replay does, and count each query's observations."""
    import sqlite3

    release = sample.get("release", "?")
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(sample["sql"])
    except sqlite3.Error as e:
        return [SampleResult(definition.name, "samples", release, False, f"sample SQL: {e}")]
    fmt = next(f for f in definition.formats if f.kind == "sqlite")
    _, warnings = load_sqlite_tables(con, db, fmt.tables)
    db.close()
    if warnings:
        return [SampleResult(definition.name, "samples", release, False, "; ".join(warnings))]
    source = SourceFile(path=Path("sample.db"), rel="sample.db", definition=definition, format=fmt, groups={})
    out = []
    expect = sample.get("expect", {})
    for q in definition.queries:
        label = f"{q.name} ({release})"
        create_stage(con, OBSERVED)
        try:
            n = insert_query_rows(con, definition, source, q, "reference")
        except duckdb.Error as e:
            out.append(SampleResult(definition.name, label, "", False, f"query fails: {first_line(e)}"))
            continue
        if q.name not in expect:
            out.append(SampleResult(definition.name, label, "", False, "the sample says nothing of this query"))
        elif n != expect[q.name]:
            detail = f"expected {expect[q.name]} observations, got {n}"
            out.append(SampleResult(definition.name, label, "", False, detail))
        else:
            out.append(SampleResult(definition.name, label, "", True))
    return out
