"""Self-check of converter definitions: every rule's sample lines must produce what they promise.

Like lnav's format tests: a sample is whole raw lines of a real file (with the path of that file), run
through the same record parsing and rules as a replay; a definition that no longer reads its own samples
fails loudly instead of silently converting nothing. `dnpc2otel converters --check` runs this over
built-in and user definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..errors import first_line
from ..tables import OBSERVED, create_stage
from .definitions import Definition
from .jsondoc import JSON_SCHEMA, load_json_text
from .lines import insert_text
from .observer import stage_records, staging_tables
from .records import SourceFile, is_record_sql
from .rules import emit_rule
from .sqlite import SQLITE_SCHEMA, insert_query_rows, load_sqlite_tables
from .templates import quote_ident

# what a rule sample may say (the JSON schema of definitions lists the same keys)
_SAMPLE_KEYS = {"release", "line", "lines", "file", "format", "expect", "attributes", "origin", "note"}
_SAMPLE_CLOCK = "reference"  # the clock of records whose format names none


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
        _check_views_bind(con, definition, results)
        for sample in definition.samples:
            if "document" in sample:
                results += _check_document_sample(con, definition, sample)
            else:
                results += _check_sqlite_sample(con, definition, sample)
        for rule in definition.rules:
            if not rule.samples:
                results.append(SampleResult(definition.name, rule.name, "", False, "rule has no sample lines"))
            for sample in rule.samples:
                results.append(_check_sample(con, definition, rule, sample))
    finally:
        con.close()
    return results


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
    """Run a rule's sample through the real pipeline: raw lines → records → every rule's matches → emits.

    The sample's lines go into a `lines` table as a file's would; they are parsed by the format's record
    SQL (with the prefilter replay uses), staged by every rule of the definition (so that `carry` finds its
    lenders among the sample's lines), and emitted; the observations of the sample's rule are checked: their
    number (`expect`), and `attributes`, each of which one of them must hold. Besides its attributes an
    observation holds `dnpc.context_type` and `dnpc.context_id` (as its span will), and for a relation
    `dnpc.relation` and `dnpc.linked_context` ("type:id", as its span link will): a carried value that
    only shows in an id can be asserted too. Every line must be a record of the format: a line that is not
    (a continuation of a multi-line record) reaches no rule, and fails the sample.
    """
    raw, problem = _sample_lines(sample)
    label = (raw[0] if raw else str(sample.get("message", "")))[:200]

    def fail(detail: str) -> SampleResult:
        return SampleResult(definition.name, rule.name, label, False, detail)

    if problem:
        return fail(problem)
    source, problem = _sample_source(definition, sample)
    if problem or source is None:
        return fail(problem or "no format")
    con.execute("CREATE OR REPLACE TEMP TABLE lines (line BIGINT, text VARCHAR)")
    tables = staging_tables(con, definition)
    created: set[str] = set()
    try:
        insert_text(con, "\n".join(raw))
        bad = [n for (n,) in con.execute(
            f"SELECT line FROM lines WHERE NOT coalesce({is_record_sql(source.format)}, false) ORDER BY line"
        ).fetchall()]
        if bad:
            what = "is not a JSON object" if source.format.kind == "jsonl" else "does not match the record pattern"
            return fail(f"line {bad[0]} {what} of format {source.format.name}")
        create_stage(con, OBSERVED)
        con.execute("ALTER TABLE lines ADD COLUMN fid INTEGER DEFAULT 0")  # the one file's lines
        stage_records(con, [source], _SAMPLE_CLOCK, tables, created)
        # as replay does, every rule emits; a rule that matched none of the lines emits nothing (its own
        # samples check its SQL), so only the sample's rule and those that matched are run
        for r in definition.rules:
            t = tables[r.name]
            if t in created and (r is rule or con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]):
                emit_rule(con, definition, r, tables, created)
        rows = con.execute(
            f"SELECT attributes, context_type, context_id, relation, related_type, related_id "
            f"FROM {OBSERVED}.observations WHERE rule = ? ORDER BY rowid",
            [rule.name],
        ).fetchall()
    except duckdb.Error as e:
        return fail(f"SQL error: {first_line(e)}")
    finally:
        for t in created:
            con.execute(f"DROP TABLE IF EXISTS {t}")
        con.execute("DROP TABLE IF EXISTS lines")
    expect = int(sample.get("expect", 1))
    if len(rows) != expect:
        return fail(f"expected {expect} observations of rule {rule.name}, got {len(rows)}")
    missing = _missing_attribute([_observed_attributes(*row) for row in rows], sample.get("attributes", {}))
    return fail(missing) if missing else SampleResult(definition.name, rule.name, label, True)


def _missing_attribute(observed: list[dict], expected: dict) -> str | None:
    """Why no observation holds one of the expected attribute values, or None."""
    for k, v in expected.items():
        if not any(o.get(k) == v for o in observed):
            seen = sorted({repr(o[k]) for o in observed if k in o}) or ["none"]
            return f"attribute {k}: expected {v!r}, got {', '.join(seen)}"
    return None


def _observed_attributes(attributes, ctype, cid, relation, rtype, rid) -> dict:
    """An observation's attributes, with its context and relation as its span and link will name them."""
    out = json.loads(attributes) if attributes else {}
    out["dnpc.context_type"], out["dnpc.context_id"] = ctype, cid
    if relation:
        out["dnpc.relation"], out["dnpc.linked_context"] = relation, f"{rtype}:{rid}"
    return out


def _sample_lines(sample: dict) -> tuple[list[str], str | None]:
    """The sample's raw lines, or why the sample is malformed."""
    unknown = sorted(set(sample) - _SAMPLE_KEYS)
    if "message" in sample:
        return [], "the `message` form of samples is gone: give the whole raw line as `line` (or `lines`)"
    if unknown:
        return [], f"unknown sample keys {unknown} (known: {sorted(_SAMPLE_KEYS)})"
    if not sample.get("release"):
        return [], "a sample must say which release wrote it (`release`)"
    if ("line" in sample) == ("lines" in sample):
        return [], "a sample gives exactly one of `line` (one raw line) or `lines` (consecutive raw lines)"
    raw = [sample["line"]] if "line" in sample else sample["lines"]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        return [], "`line` is a string and `lines` a non-empty array of strings"
    for i, x in enumerate(raw, 1):
        if "\n" in x or "\r" in x:
            return [], f"line {i} holds a line break: give each raw line as its own element of `lines`"
    return list(raw), None


def _sample_source(definition: Definition, sample: dict) -> tuple[SourceFile | None, str | None]:
    """The file the sample's lines come from: its format and path groups, as rundir.py would find them."""
    logs = [f for f in definition.formats if f.kind in ("lines", "jsonl")]
    if not logs:
        return None, "the definition has no lines or jsonl format"
    rel = sample.get("file")
    name = sample.get("format")
    if name is not None:
        named = [f for f in logs if f.name == name]
        if not named:
            return None, f"no lines or jsonl format named {name!r} (formats: {', '.join(f.name for f in logs)})"
        candidates = named
    else:
        candidates = logs
    if rel is None:
        return SourceFile(Path("sample"), "sample", definition, candidates[0], {}), None
    for fmt in candidates:
        m = fmt.files.fullmatch(rel)
        if m:
            return SourceFile(Path(rel), rel, definition, fmt, m.groupdict()), None
    which = f"format {name}" if name is not None else "any format"
    return None, f"file {rel!r} does not match the `files` pattern of {which} of the definition"


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
    _, warnings = load_sqlite_tables(con, db, fmt.tables, columns=fmt.columns)
    db.close()
    if warnings:
        return [SampleResult(definition.name, "samples", release, False, "; ".join(warnings))]
    source = SourceFile(path=Path("sample.db"), rel="sample.db", definition=definition, format=fmt, groups={})
    return _check_query_counts(con, definition, source, sample, SQLITE_SCHEMA)


def _check_query_counts(
    con: duckdb.DuckDBPyConnection, definition: Definition, source: SourceFile, sample: dict, schema: str
) -> list[SampleResult]:
    """Run every query over the loaded sample (into a fresh `observations`) and compare its count to `expect`."""
    release = sample.get("release", "?")
    out = []
    expect = sample.get("expect", {})
    create_stage(con, OBSERVED)
    for q in definition.queries:
        label = f"{q.name} ({release})"
        try:
            n = insert_query_rows(con, definition, source, q, "reference", schema)
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


def _check_document_sample(con: duckdb.DuckDBPyConnection, definition: Definition, sample: dict) -> list[SampleResult]:
    """Load the sample's JSON document as replay loads a file (run directory 000), run every query, and check
    each query's count (`expect`) and the `attributes` one of the observations must hold."""
    release = sample.get("release", "?")
    fmt = next((f for f in definition.formats if f.kind == "json"), None)
    if fmt is None:
        return [SampleResult(definition.name, "samples", release, False, "a `document` sample needs a json format")]
    problem = load_json_text(con, sample["document"])
    if problem:
        return [SampleResult(definition.name, "samples", release, False, problem)]
    source = SourceFile(path=Path("sample.json"), rel="sample.json", definition=definition, format=fmt,
                        groups={"rundir": "000"})
    out = _check_query_counts(con, definition, source, sample, JSON_SCHEMA)
    rows = con.execute(f"SELECT attributes, context_type, context_id, relation, related_type, related_id "
                       f"FROM {OBSERVED}.observations ORDER BY rowid").fetchall()
    missing = _missing_attribute([_observed_attributes(*row) for row in rows], sample.get("attributes", {}))
    if missing:
        out.append(SampleResult(definition.name, f"attributes ({release})", "", False, missing))
    return out
