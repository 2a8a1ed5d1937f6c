"""Run converter definitions over source files: records → rule matches → observation rows, in DuckDB.

Data stays columnar all the way: a log file is read in large chunks, split into lines and parsed by
DuckDB's vectorised regular expressions; only rows a rule matches are kept (in one staging table per
rule); derived and carried fields and the emitted observations are computed by SQL over those tables.
No Python object is made per line.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from .definitions import RECORD_FIELDS, Definition, Emit, Format, Query, Rule
from .errors import first_line
from .observations import COLUMNS
from .templates import json_member_path, json_object_sql, quote_ident, quote_literal, to_sql
from .timeparse import is_epoch, to_ns

CHUNK_BYTES = 32 << 20


@dataclass
class SourceFile:
    path: Path
    rel: str  # relative to the run_dir, with '/' separators
    definition: Definition
    format: Format
    groups: dict[str, str | None]  # named groups of the format's `files` pattern

    @property
    def run_key(self) -> str | None:
        rundir = self.groups.get("rundir")
        return f"dir:{rundir}" if rundir else None


@dataclass
class FileStats:
    source: str
    converter: str
    format: str
    bytes: int = 0
    lines: int = 0
    records: int = 0
    observations: int = 0
    not_understood: int = 0
    invalid_bytes: bool = False
    warning: str | None = None


@dataclass
class Observer:
    """Fills the `observations` and `sources` tables of `con`."""

    con: duckdb.DuckDBPyConnection
    on_bytes: Callable[[int], None] = lambda n: None
    on_warning: Callable[[str], None] = lambda msg: None
    stats: list[FileStats] = field(default_factory=list)

    def observe(self, definition: Definition, files: list[SourceFile]) -> None:
        if not files:
            return
        line_files = [f for f in files if f.format.kind in ("lines", "jsonl")]
        if line_files:
            self._observe_logs(definition, line_files)
        for f in files:
            if f.format.kind == "sqlite":
                self._observe_sqlite(definition, f)

    # ------------------------------------------------------------------ logs
    def _observe_logs(self, definition: Definition, files: list[SourceFile]) -> None:
        path_groups = sorted({g for f in files for g in f.format.files.groupindex} - {"rundir"})
        tables = {r.name: f"m_{_ident(definition.name)}_{i}" for i, r in enumerate(definition.rules)}
        for t in tables.values():
            self.con.execute(f"DROP TABLE IF EXISTS {t}")
        created: set[str] = set()
        for f in files:
            st = FileStats(f.rel, definition.name, f.format.name)
            self.stats.append(st)
            try:
                self._read_log(f, st, path_groups, definition.rules, tables, created)
            except OSError as e:
                st.warning = f"cannot read: {e.strerror or e}"
                self.on_warning(f"{f.rel}: {st.warning}; skipped")
        emitted = sum(emit_rule(self.con, definition, r, tables, created) for r in definition.rules
                      if tables[r.name] in created)
        for t in created:
            self.con.execute(f"DROP TABLE IF EXISTS {t}")
        if emitted:
            self._count_observations(definition)

    def _count_observations(self, definition: Definition) -> None:
        by_source = dict(self.con.execute(
            "SELECT source, count(*) FROM observations WHERE converter = ? GROUP BY source", [definition.name]
        ).fetchall())
        logs = {f.name for f in definition.formats if f.kind != "sqlite"}
        for st in self.stats:
            if st.converter == definition.name and st.format in logs:
                st.observations = by_source.get(st.source, 0)

    def _read_log(
        self,
        f: SourceFile,
        st: FileStats,
        path_groups: list[str],
        rules: tuple[Rule, ...],
        tables: dict[str, str],
        created: set[str],
    ) -> None:
        st.bytes = f.path.stat().st_size
        st.invalid_bytes = load_lines(self.con, f.path)
        self.on_bytes(st.bytes)
        fmt = f.format
        row = self.con.execute("SELECT count(*) FROM lines").fetchone()
        st.lines = int(row[0]) if row else 0
        st.not_understood = _not_understood(self.con, fmt)
        # only lines that may match a rule are parsed into records: most lines of a DEBUG log match none
        cond = _prefilter(fmt, rules)
        lines = f"SELECT * FROM lines WHERE {cond}" if cond else "SELECT * FROM lines"
        record_sql = _record_sql(f, path_groups, lines, _fields_used(fmt, rules))
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE rec AS {record_sql}")
        row = self.con.execute("SELECT count(*) FROM rec WHERE is_record").fetchone()
        st.records = int(row[0]) if row else 0
        for rule in rules:
            match_rule(self.con, rule, tables[rule.name], created)
        self.con.execute("DROP TABLE IF EXISTS lines")
        self.con.execute("DROP TABLE IF EXISTS rec")

    # ------------------------------------------------------------------ SQLite
    def _observe_sqlite(self, definition: Definition, f: SourceFile) -> None:
        st = FileStats(f.rel, definition.name, f.format.name, bytes=f.path.stat().st_size)
        self.stats.append(st)
        self.on_bytes(st.bytes)
        try:
            db = _open_sqlite(f.path)
        except sqlite3.Error as e:
            st.warning = f"not a readable SQLite database ({e})"
            self.on_warning(f"{f.rel}: {st.warning}; converting the other sources")
            return
        schema = SQLITE_SCHEMA
        try:
            st.lines, warnings = load_sqlite_tables(self.con, db, f.format.tables, schema)
        finally:
            db.close()
        for w in warnings:
            st.warning = w
            self.on_warning(f"{f.rel}: {w}")
        st.records = st.lines
        if st.lines == 0 and warnings:
            return
        for q in definition.queries:
            try:
                st.observations += insert_query_rows(self.con, definition, f, q, schema)
            except duckdb.Error as e:
                st.warning = f"query {q.name} failed ({first_line(e)})"
                self.on_warning(f"{f.rel}: {st.warning}; its rows are missing")


# ---------------------------------------------------------------------- reading logs
# a delimiter no log line contains, so that DuckDB's parallel CSV reader hands over whole lines
_NO_DELIMITER = "chr(31) || chr(30) || chr(29)"
MAX_LINE_BYTES = 64 << 20


def load_lines(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Create temp table lines(line, text) of a file; returns whether invalid bytes were replaced.

    DuckDB's CSV reader (parallel, order-preserving) is the fast path; a file with bytes that are not
    UTF-8 is read again in Python, chunk by chunk, with those bytes replaced.
    """
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE lines AS SELECT row_number() OVER () AS line, coalesce(text, '') AS text "
            f"FROM read_csv(?, columns = {{'text': 'VARCHAR'}}, delim = {_NO_DELIMITER}, quote = '', escape = '', "
            f"header = false, auto_detect = false, strict_mode = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
        return False
    except duckdb.Error:
        pass
    con.execute("CREATE OR REPLACE TEMP TABLE lines (line BIGINT, text VARCHAR)")
    line0 = 0
    invalid = False
    for text, n_lines, _nbytes, bad in _chunks(path):
        invalid |= bad
        con.execute(
            "INSERT INTO lines SELECT generate_subscripts(l, 1) + $2 AS line, unnest(l) AS text "
            "FROM (SELECT string_split($1, chr(10)) AS l)",
            [text, line0],
        )
        line0 += n_lines
    return invalid


def _chunks(path: Path):
    """Yield (text, lines, bytes, had_invalid_utf8) for large chunks of whole lines."""
    with open(path, "rb") as fh:
        rest = b""
        while True:
            block = fh.read(CHUNK_BYTES)
            if not block:
                break
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield _decode(data[: cut + 1])
        if rest:
            yield _decode(rest + b"\n")


def _decode(data: bytes) -> tuple[str, int, int, bool]:
    invalid = False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        invalid = True
    if "\x00" in text:  # NUL cannot travel in a SQL string parameter
        text = text.replace("\x00", "\ufffd")
        invalid = True
    n = text.count("\n")
    return text[:-1] if text.endswith("\n") else text, n, len(data), invalid


def _without_captures(pattern: str) -> str:
    """The same pattern with named groups made non-capturing: RE2 then runs its fast DFA."""
    return re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(?:", pattern)


def _not_understood(con: duckdb.DuckDBPyConnection, fmt: Format) -> int:
    """Non-empty lines that fit no record; in a multi-line format, only those before the first record."""
    if fmt.kind == "jsonl":
        is_record = "json_valid(text)"
    else:
        assert fmt.record is not None
        is_record = f"regexp_matches(text, {quote_literal(_without_captures(fmt.record))})"
    if not fmt.multiline:
        row = con.execute(f"SELECT count(*) FROM lines WHERE text <> '' AND NOT {is_record}").fetchone()
        return int(row[0]) if row else 0
    first = con.execute(f"SELECT min(line) FROM lines WHERE line <= 1000 AND {is_record}").fetchone()
    if not first or first[0] is None:
        first = con.execute(f"SELECT min(line) FROM lines WHERE {is_record}").fetchone()
    limit = first[0] if first and first[0] is not None else None
    cond = f"line < {int(limit)}" if limit is not None else "TRUE"
    row = con.execute(f"SELECT count(*) FROM lines WHERE text <> '' AND {cond}").fetchone()
    return int(row[0]) if row else 0


def _prefilter(fmt: Format, rules: tuple[Rule, ...]) -> str | None:
    """A condition on raw lines that every line a rule can match satisfies, or None.

    With the format's `message_prefix` (the text just before the message, e.g. ': '), the rules' own
    patterns, unanchored and without captures, after that prefix: one DFA pass over the raw line.
    False positives are harmless (the exact match follows); false negatives cannot occur.
    """
    if fmt.kind != "lines" or not fmt.message_prefix or not rules:
        return None
    if any(r.input_field != "message" for r in rules):
        return None
    alternatives = [_without_captures(r.match).removeprefix("^") for r in rules]
    pattern = re.escape(fmt.message_prefix) + "(?:" + "|".join(alternatives) + ")"
    return f"regexp_matches(text, {quote_literal(pattern)})"


def _fields_used(fmt: Format, rules: tuple[Rule, ...]) -> set[str]:
    """The record fields anything reads: only these are captured (each capture costs a regex pass)."""
    used = {"message", fmt.time or "", fmt.local_time or ""}
    text = []
    for r in rules:
        used.add(r.input_field)
        if r.logger:
            used.add("logger")
        text += [*r.derive.values()]
        for e in r.emit:
            text += [e.context, e.event or "", e.parent or "", e.link or "", e.alias or "", e.where or ""]
            text += [*e.attributes.values(), *e.event_attributes.values(), *e.each.values()]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(text)))
    return used | (words & set(RECORD_FIELDS))


def _record_sql(f: SourceFile, path_groups: list[str], lines: str, used: set[str] | None = None) -> str:
    """SQL giving one record row per line of the `lines` query (line, text)."""
    fmt = f.format
    if fmt.kind == "lines":
        assert fmt.record is not None
        record = fmt.record
        if used is not None:  # fields nobody reads are matched but not captured
            record = re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) in used else "(?:", record)
        names = list(_group_names(record))
        pat = quote_literal(record)
        parsed = (
            f"SELECT line, text, regexp_matches(text, {quote_literal(_without_captures(record))}) AS is_record, "
            f"regexp_extract(text, {pat}, [{', '.join(quote_literal(n) for n in names)}]) AS r FROM ({lines})"
        )

        def fld(name: str | None) -> str:
            return f"nullif(r.{quote_ident(name)}, '')" if name and name in names else "NULL"

        message = "r.message"
    else:  # jsonl
        parsed = f"SELECT line, text, json_valid(text) AS is_record, text AS r FROM ({lines})"

        def fld(name: str | None) -> str:
            if not name:
                return "NULL"
            key = fmt.fields.get(name, name)
            return f"CASE WHEN is_record THEN json_extract(r, {quote_literal(json_member_path(key))})::VARCHAR END"

        message_path = quote_literal(json_member_path(fmt.fields.get("message", "message")))
        message = f"CASE WHEN is_record THEN json_extract_string(r, {message_path}) END"

    def raw_text(name: str | None) -> str:
        # JSON strings come quoted from json_extract: unquote them; numbers stay as written
        v = fld(name)
        return f"trim({v}, '\"')" if fmt.kind == "jsonl" else v

    time_col = raw_text(fmt.time) if fmt.time else "NULL"
    local_col = raw_text(fmt.local_time) if fmt.local_time else "NULL"
    if fmt.time and is_epoch(fmt.time_format):
        time_ns, local_ns = to_ns(time_col, fmt.time_format), "NULL"
        if fmt.local_time:
            local_ns = to_ns(local_col, fmt.local_time_format or "timestamp")
    elif fmt.time:
        time_ns, local_ns = "NULL", to_ns(time_col, fmt.time_format)
    else:
        time_ns, local_ns = "NULL", "NULL"
    cols = [
        f"{quote_literal(f.rel)} AS source",
        f"{quote_literal(f.run_key) if f.run_key else 'NULL'}::VARCHAR AS run_key",
        "line",
        f"CAST({time_ns} AS BIGINT) AS time_ns",
        f"CAST({local_ns} AS BIGINT) AS local_ns",
        f"{quote_literal(_file_clock(fmt.clock, f.groups))} AS clock",
        f"{message} AS message",
    ]
    cols += [f"{raw_text(n)} AS {n}" for n in RECORD_FIELDS if n != "message"]
    cols += [
        f"{quote_literal(f.groups[g]) if f.groups.get(g) is not None else 'NULL'}::VARCHAR AS {quote_ident(g)}"
        for g in path_groups
    ]
    cols += ["is_record", "text"]
    return f"SELECT {', '.join(cols)} FROM ({parsed})"


def _file_clock(template: str, groups: dict[str, str | None]) -> str:
    """A format's clock may name the file's host by its path groups: 'manager:{manager}'."""
    return re.sub(r"\{(\w+)\}", lambda m: groups.get(m.group(1)) or "", template)



def _group_names(pattern: str) -> tuple[str, ...]:
    p = re.compile(pattern)
    return tuple(sorted(p.groupindex, key=p.groupindex.__getitem__))


# ---------------------------------------------------------------------- rules
def match_rule(con: duckdb.DuckDBPyConnection, rule: Rule, table: str, created: set[str]) -> None:
    """Append the records of table `rec` that `rule` matches to its staging table."""
    pat = quote_literal(rule.match)
    where = f"is_record AND regexp_matches({quote_ident(rule.input_field)}, {pat})"
    if rule.logger:
        where += f" AND starts_with(logger, {quote_literal(rule.logger)})"
    if rule.groups:
        names = ", ".join(quote_literal(g) for g in rule.groups)
        groups = ", ".join(f"nullif(g.{quote_ident(g)}, '') AS {quote_ident(g)}" for g in rule.groups)
        select = (
            f"SELECT * EXCLUDE (g, is_record, text), {groups} FROM "
            f"(SELECT *, regexp_extract({quote_ident(rule.input_field)}, {pat}, [{names}]) AS g FROM rec WHERE {where})"
        )
    else:
        select = f"SELECT * EXCLUDE (is_record, text) FROM rec WHERE {where}"
    if table in created:
        con.execute(f"INSERT INTO {table} {select}")
    else:
        con.execute(f"CREATE TEMP TABLE {table} AS {select}")
        created.add(table)


def emit_rule(
    con: duckdb.DuckDBPyConnection,
    definition: Definition,
    rule: Rule,
    tables: dict[str, str],
    created: set[str],
) -> int:
    """Turn a rule's staged matches into observation rows; returns how many."""
    table = tables[rule.name]
    base = f"SELECT * FROM {table}"
    if rule.carry:
        c = rule.carry
        sources = [tables[r] for r in c.source_rules if tables[r] in created]
        if not sources:
            base = f"SELECT *, {', '.join(f'NULL::VARCHAR AS {quote_ident(x)}' for x in c.fields)} FROM {table}"
        else:
            keys = "".join(", " + quote_ident(k) for k in c.key)  # no key: the nearest line of the file
            frame = (
                "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
                if c.direction == "previous"
                else "ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING"
            )
            fn = "last_value" if c.direction == "previous" else "first_value"
            carried = ", ".join(
                f"{fn}({quote_ident(x)} IGNORE NULLS) OVER (PARTITION BY source{keys} ORDER BY line {frame}) "
                f"AS {quote_ident(x)}"
                for x in c.fields
            )
            src_cols = ", ".join(quote_ident(x) for x in ("source", "line", *c.key, *c.fields))
            lenders = " UNION ALL BY NAME ".join(f"SELECT {src_cols}, false AS __self FROM {s}" for s in sources)
            base = (
                f"SELECT * EXCLUDE (__self) FROM (SELECT * EXCLUDE ({', '.join(quote_ident(x) for x in c.fields)}), "
                f"{carried} FROM (SELECT *, true AS __self FROM {table} UNION ALL BY NAME {lenders})) WHERE __self"
            )
    if rule.derive:
        derived = ", ".join(f"({expr}) AS {quote_ident(k)}" for k, expr in rule.derive.items())
        base = f"SELECT *, {derived} FROM ({base})"
    total = 0
    for i, emit in enumerate(rule.emit):
        sql = _emit_sql(definition, rule, emit, base, i)
        row = con.execute(f"INSERT INTO observations {sql}").fetchone()
        total += int(row[0]) if row else 0
    return total


def _emit_sql(definition: Definition, rule: Rule, emit: Emit, base: str, index: int) -> str:
    src = base
    if emit.each:
        unnests = ", ".join(f"unnest({expr}) AS {quote_ident(k)}" for k, expr in emit.each.items())
        src = f"SELECT *, {unnests} FROM ({base})"
    ctype, cid = emit.context.split(":", 1)
    relation, rtype, rid = "NULL", "NULL", "NULL"
    if emit.parent:
        ptype, pid = emit.parent.split(":", 1)
        relation, rtype, rid = "'child_of'", quote_literal(ptype), to_sql(pid)
    elif emit.link:
        ltype, lid = emit.link.split(":", 1)
        relation, rtype, rid = quote_literal(emit.relation or "link"), quote_literal(ltype), to_sql(lid)
    elif emit.alias:
        relation, rtype, rid = "'alias'", "'run'", to_sql(emit.alias)
    cols = {
        "run_key": "run_key",
        "context_type": quote_literal(ctype),
        "context_id": to_sql(cid),
        "event": to_sql(emit.event) if emit.event else "NULL",
        "time_ns": "time_ns",
        "local_ns": "local_ns",
        "clock": "clock",
        "bounds": "true" if emit.bounds else "false",
        "attributes": json_object_sql(emit.attributes),
        "event_attributes": json_object_sql(emit.event_attributes),
        "relation": relation,
        "related_type": rtype,
        "related_id": rid,
        "source": "source",
        "line": "line",
        "converter": quote_literal(definition.name),
        "rule": quote_literal(rule.name),
        "priority": str(definition.priority),
    }
    where = ["context_id IS NOT NULL"]
    if emit.parent or emit.link or emit.alias:
        where.append("related_id IS NOT NULL")
    select = ", ".join(f"{expr} AS {name}" for name, expr in cols.items())
    cond = f" WHERE {emit.where}" if emit.where else ""
    return f"SELECT * FROM (SELECT {select} FROM ({src}){cond}) WHERE {' AND '.join(where)}"


# ---------------------------------------------------------------------- SQLite sources
SQLITE_SCHEMA = "sqlite_source"


def _open_sqlite(path: Path) -> sqlite3.Connection:
    uri = f"file:{path.resolve().as_posix()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        # a database on a read-only medium, or with a -wal we may not touch: read it as immutable
        db = sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro&immutable=1", uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db


def load_sqlite_tables(
    con: duckdb.DuckDBPyConnection, db: sqlite3.Connection, tables: tuple[str, ...], schema: str = SQLITE_SCHEMA
) -> tuple[int, list[str]]:
    """Copy the named SQLite tables, as they are (plus `_rowid`), into a DuckDB schema (sqlite_source).

    Rows travel in Arrow batches; every mapping to observations then runs as DuckDB SQL, vectorised.
    Returns (rows copied, warnings). A table the database lacks (an older schema) is simply absent.
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
                cols = ", ".join(f"NULL::VARCHAR AS {quote_ident(n)}" for n in names)
                con.execute(f"CREATE TABLE {target} AS SELECT {cols} LIMIT 0")
        except (sqlite3.Error, duckdb.Error, pa.ArrowException) as e:
            warnings.append(f"table {table} is unreadable ({first_line(e)}); its rows are missing")
    return total, warnings


def _arrow_column(values: tuple) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # SQLite's loose typing: one column, several types
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def insert_query_rows(
    con: duckdb.DuckDBPyConnection, definition: Definition, f: SourceFile, q: Query, schema: str = SQLITE_SCHEMA
) -> int:
    """Run one of the definition's queries (DuckDB SQL over sqlite_source) into `observations`.

    The first of the query and its `alternatives` that binds against the loaded tables is used.
    """
    con.execute(f"SET search_path = '{schema},main'")
    try:
        return _insert_query_rows(con, definition, f, q)
    finally:
        con.execute("RESET search_path")


def _insert_query_rows(con: duckdb.DuckDBPyConnection, definition: Definition, f: SourceFile, q: Query) -> int:
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
               coalesce({col('clock')}::VARCHAR, 'dfk') AS clock,
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
               {quote_literal(f.rel)} AS source,
               TRY_CAST({col('line')} AS BIGINT) AS line,
               {quote_literal(definition.name)} AS converter,
               {quote_literal(q.name)} AS rule,
               {definition.priority} AS priority
        FROM (SELECT *, {col('context')}::VARCHAR AS context FROM query_rows)
        WHERE context IS NOT NULL AND {col('run_key')} IS NOT NULL
    """
    row = con.execute(f"INSERT INTO main.observations ({', '.join(COLUMNS)}) {select}").fetchone()
    return int(row[0]) if row else 0



def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
