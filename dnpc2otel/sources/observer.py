"""Run converter definitions over source files: records → rule matches → observation rows, in DuckDB.

Data stays columnar all the way: a log file is read in large chunks, split into lines and parsed by
DuckDB's vectorised regular expressions; only rows a rule matches are kept (in one staging table per
rule); derived and carried fields and the emitted observations are computed by SQL over those tables.
No Python object is made per line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from ..errors import first_line
from ..tables import OBSERVED
from .definitions import Definition
from .jsondoc import JSON_SCHEMA, load_json_document
from .lines import MAX_LINE_BYTES, LineDamage, load_files
from .records import LineCensus, SourceFile, count_records, fields_used, file_table, prefilter, record_sql
from .rules import emit_rule, match_rule
from .sqlite import SQLITE_SCHEMA, insert_query_rows, load_sqlite_tables, open_sqlite

# files of one format read in one statement: up to this many bytes (their lines held at once, spilling beyond
# the memory limit) or files
BATCH_BYTES = 256 << 20
BATCH_FILES = 4096


@dataclass
class FileStats:
    source: str
    converter: str
    format: str
    bytes: int = 0
    lines: int = 0
    records: int = 0  # lines (rows) that are records of the format
    records_used: int = 0  # records some rule matched (a query's rows, for SQLite)
    observations: int = 0
    not_understood: int = 0
    invalid_bytes: int = 0  # bytes replaced by U+FFFD: not UTF-8, or NUL
    warning: str | None = None  # the one warning said about the file: what is wrong, and what was done
    damage: str | None = None  # how the file itself is damaged (cut, invalid bytes, binary lines, unreadable parts)
    skipped: bool = False  # nothing of it was read


def describe_damage(d: LineDamage, binary_lines: int) -> str | None:
    """'cut mid-line: …; 300012 invalid bytes …; 1172 lines are binary …': how a log file is damaged."""
    parts = []
    if d.cut:
        parts.append(f"cut mid-line: its last {d.cut_bytes} bytes have no newline (an unfinished line, not read)")
    if d.invalid_bytes:
        parts.append(f"{d.invalid_bytes} invalid bytes (not UTF-8, or NUL) replaced by U+FFFD")
    if binary_lines:
        parts.append(f"{_n(binary_lines, 'binary line')} (no records: skipped)")
    if d.long_lines:
        parts.append(f"{_n(d.long_lines, 'line')} over {MAX_LINE_BYTES >> 20} MiB (not read)")
    return "; ".join(parts) or None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass
class Observer:
    """Fills `observed.observations` of `con`; keeps a FileStats per file read."""

    con: duckdb.DuckDBPyConnection
    default_clock: str
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
            elif f.format.kind == "json":
                self._observe_json(definition, f)

    # ------------------------------------------------------------------ logs
    def _observe_logs(self, definition: Definition, files: list[SourceFile]) -> None:
        tables = staging_tables(self.con, definition)
        created: set[str] = set()
        read: dict[int, FileStats] = {}  # by id() of the file: stats kept in the files' order, not the batches'
        for batch in batches(files):
            read.update(zip(map(id, batch), self._read_logs(batch, tables, created), strict=True))
        mine = [read[id(f)] for f in files]
        self.stats.extend(mine)
        emitted = sum(emit_rule(self.con, definition, r, tables, created) for r in definition.rules
                      if tables[r.name] in created)
        used = records_used(self.con, tables, created)
        for st in mine:
            st.records_used = used.get(st.source, 0)
        for t in created:
            self.con.execute(f"DROP TABLE IF EXISTS {t}")
        if emitted:
            self._count_observations(definition)

    def _count_observations(self, definition: Definition) -> None:
        by_source = dict(self.con.execute(
            f"SELECT source, count(*) FROM {OBSERVED}.observations WHERE converter = ? GROUP BY source",
            [definition.name],
        ).fetchall())
        logs = {f.name for f in definition.formats if f.kind in ("lines", "jsonl")}
        for st in self.stats:
            if st.converter == definition.name and st.format in logs:
                st.observations = by_source.get(st.source, 0)

    def _read_logs(self, files: list[SourceFile], tables: dict[str, str], created: set[str]) -> list[FileStats]:
        """Read files of one format together: lines, census and rule matches in a few statements for all."""
        fmt = files[0].format
        stats = [FileStats(f.rel, f.definition.name, fmt.name) for f in files]
        loaded = load_files(self.con, [f.path for f in files], "lines")
        self.on_bytes(sum(d.size for d in loaded if isinstance(d, LineDamage)))
        census = count_records(self.con, fmt)
        for fid, (f, st, damage) in enumerate(zip(files, stats, loaded, strict=True)):
            if isinstance(damage, OSError):  # vanished since it was listed, unreadable (permissions), an I/O error
                st.damage, st.skipped = f"cannot read: {damage.strerror or damage}", True
                self._warn(f, st, [st.damage], "skipped")
                continue
            c = census.get(fid, LineCensus())
            st.bytes, st.invalid_bytes, st.lines = damage.size, damage.invalid_bytes, c.lines
            st.records, st.not_understood = c.records, c.not_understood
            st.damage = describe_damage(damage, c.binary) or ("empty (0 bytes)" if st.bytes == 0 else None)
            problems = [st.damage] if st.damage else []
            if st.bytes == 0:
                self._warn(f, st, problems, "nothing to read")
            elif st.records == 0 and st.not_understood:
                # a logging format no definition knows (a user's own, a release not read yet): say so, go on
                problems.append(f"no line is in the {f.definition.name} format {fmt.name!r} "
                                f"({st.not_understood} lines)")
                st.skipped = True
            if problems and st.bytes:
                self._warn(f, st, problems, "file skipped" if st.skipped else "the rest was read")
        stage_records(self.con, files, self.default_clock, tables, created)
        self.con.execute("DROP TABLE IF EXISTS lines")
        return stats

    def _warn(self, f: SourceFile, st: FileStats, problems: list[str], outcome: str) -> None:
        """One warning line per file, whatever is wrong with it."""
        st.warning = "; ".join([*problems, outcome])
        self.on_warning(f"{f.rel}: {st.warning}")

    # ------------------------------------------------------------------ SQLite
    def _observe_sqlite(self, definition: Definition, f: SourceFile) -> None:
        st = FileStats(f.rel, definition.name, f.format.name)
        self.stats.append(st)
        try:
            st.bytes = f.path.stat().st_size
            db, note = open_sqlite(f.path)
        except (sqlite3.Error, OSError) as e:
            st.damage, st.skipped = f"not a readable SQLite database ({first_line(e)})", True
            self._warn(f, st, [st.damage], "converting the other sources")
            return
        finally:
            self.on_bytes(st.bytes)
        try:
            st.lines, unreadable = load_sqlite_tables(self.con, db, f.format.tables, SQLITE_SCHEMA, f.format.columns)
        finally:
            db.close()
        st.damage = "; ".join([*([note] if note else []), *unreadable]) or None
        problems = [st.damage] if st.damage else []
        st.records = st.records_used = st.lines
        if st.lines == 0 and unreadable:
            st.skipped = True
            self._warn(f, st, problems, "converting the other sources")
            return
        self._run_queries(definition, f, st, problems)

    def _run_queries(self, definition: Definition, f: SourceFile, st: FileStats, problems: list[str],
                     schema: str = SQLITE_SCHEMA, keyless: bool = False) -> None:
        for q in definition.queries:
            try:
                st.observations += insert_query_rows(self.con, definition, f, q, self.default_clock, schema, keyless)
            except duckdb.Error as e:
                problems.append(f"query {q.name} failed ({first_line(e)}): its rows are missing")
        if problems:
            self._warn(f, st, problems, "the rest was read")

    # ------------------------------------------------------------------ JSON documents
    def _observe_json(self, definition: Definition, f: SourceFile) -> None:
        st = FileStats(f.rel, definition.name, f.format.name)
        self.stats.append(st)
        try:
            st.bytes = f.path.stat().st_size
        except OSError as e:
            st.damage, st.skipped = f"cannot read: {e.strerror or e}", True
            self._warn(f, st, [st.damage], "converting the other sources")
            return
        self.on_bytes(st.bytes)
        problem = load_json_document(self.con, f.path, f.rel, f.run_key)
        if problem:
            st.damage, st.skipped = problem, True
            self._warn(f, st, [problem], "converting the other sources")
            return
        st.lines = st.records = st.records_used = 1
        # a document whose path names no run (runinfo/sacct.json) is tied to one by the core, like a log file
        self._run_queries(definition, f, st, [], JSON_SCHEMA, keyless=True)


def staging_tables(con: duckdb.DuckDBPyConnection, definition: Definition) -> dict[str, str]:
    """One (not yet created) staging table name per rule of the definition."""
    tables = {r.name: f"m_{_ident(definition.name)}_{i}" for i, r in enumerate(definition.rules)}
    for t in tables.values():
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return tables


def stage_records(
    con: duckdb.DuckDBPyConnection, files: list[SourceFile], default_clock: str, tables: dict[str, str],
    created: set[str], lines: str = "lines",
) -> None:
    """Parse table `lines`(fid, line, text) of `files` (of one format; fid: the index in `files`) into records
    and stage each rule's matches."""
    definition, fmt = files[0].definition, files[0].format
    # only lines that may match a rule are parsed into records: most lines of a DEBUG log match none
    cond = prefilter(fmt, definition)
    selected = f"SELECT * FROM {lines} WHERE {cond}" if cond else f"SELECT * FROM {lines}"
    file_table(con, "rec_files", files, default_clock)
    sql = record_sql(fmt, definition, selected, "rec_files", fields_used(fmt, definition))
    con.execute(f"CREATE OR REPLACE TEMP TABLE rec AS {sql}")
    for rule in definition.rules:
        match_rule(con, rule, tables[rule.name], created)
    con.execute("DROP TABLE IF EXISTS rec")
    con.execute("DROP TABLE IF EXISTS rec_files")


def records_used(con: duckdb.DuckDBPyConnection, tables: dict[str, str], created: set[str]) -> dict[str, int]:
    """Records of each file (source) that at least one rule matched (its lines in the rules' staging tables)."""
    staged = [t for t in tables.values() if t in created]
    if not staged:
        return {}
    union = " UNION ".join(f"SELECT source, line FROM {t}" for t in staged)
    return {src: int(n) for src, n in con.execute(f"SELECT source, count(*) FROM ({union}) GROUP BY source").fetchall()}


def batches(files: list[SourceFile]) -> list[list[SourceFile]]:
    """Files grouped by format, in order, each group cut at BATCH_BYTES (memory stays bounded) or BATCH_FILES."""
    out: list[list[SourceFile]] = []
    by_format: dict[int, list[SourceFile]] = {}
    for f in files:
        by_format.setdefault(id(f.format), []).append(f)
    for group in by_format.values():
        batch: list[SourceFile] = []
        size = 0
        for f in group:
            n = _size(f)
            if batch and (size + n > BATCH_BYTES or len(batch) >= BATCH_FILES):
                out.append(batch)
                batch, size = [], 0
            batch.append(f)
            size += n
        out.append(batch)
    return out


def _size(f: SourceFile) -> int:
    try:
        return f.path.stat().st_size
    except OSError:
        return 0


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
