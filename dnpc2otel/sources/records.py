"""Record parsing compiled to DuckDB SQL: numbered lines → one record row per line, with the format's fields.

A record row has fixed columns (source, run_key, line, time_ns, local_ns, clock, is_record, text), one
column per record field of the definition (the union over its formats: a field a format lacks is NULL)
and one per named group of the files' path patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .definitions import Definition, Format
from .templates import json_member_path, quote_ident, quote_literal
from .timeparse import is_epoch, to_ns


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


def without_captures(pattern: str) -> str:
    """The same pattern with named groups made non-capturing: RE2 then runs its fast DFA."""
    return re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(?:", pattern)


def is_record_sql(fmt: Format) -> str:
    if fmt.kind == "jsonl":
        return "json_valid(text)"
    assert fmt.record is not None
    return f"regexp_matches(text, {quote_literal(without_captures(fmt.record))})"


# a line holding a control character (tab, CR and ESC of coloured output excepted) or U+FFFD (bytes that were
# not UTF-8, or NUL) is not text: binary garbage, never a continuation of a multi-line record
NOT_TEXT = r"[\x00-\x08\x0B\x0C\x0E-\x1A\x1C-\x1F\x7F\x{FFFD}]"


@dataclass
class LineCensus:
    records: int = 0  # lines that are records of the format
    not_understood: int = 0  # non-empty lines that are no record and continue none
    binary: int = 0  # of those, lines that are not text (NOT_TEXT)
    lines: int = 0  # every line of the file


def count_records(con: duckdb.DuckDBPyConnection, fmt: Format, lines: str = "lines") -> dict[int, LineCensus]:
    """Lines, records and lines not understood of each file (fid) of table `lines`(fid, line, text), in one pass.

    A line not understood is a non-empty line that fits no record; in a multi-line format a text line after
    the first record continues it (tracebacks, config dumps), so only those before the first record count,
    and every line that is not text (binary garbage appended to a log is no traceback)."""
    is_record = is_record_sql(fmt)
    binary = f"regexp_matches(text, {quote_literal(NOT_TEXT)})"
    census: dict[int, LineCensus] = {}
    firsts: list[tuple[int, int]] = []
    for fid, records, first, misfits, binaries, lines_n in con.execute(
        f"""SELECT fid, count(*) FILTER (WHERE r), min(line) FILTER (WHERE r),
                   count(*) FILTER (WHERE text <> '' AND NOT r),
                   count(*) FILTER (WHERE NOT r AND text <> '' AND {binary}), count(*)
            FROM (SELECT fid, line, text, {is_record} AS r FROM {lines}) GROUP BY fid"""
    ).fetchall():
        census[fid] = LineCensus(int(records), int(misfits), int(binaries), int(lines_n))
        if fmt.multiline and records:  # before the first record: none, unless the query below finds some
            census[fid].not_understood = int(binaries)
            firsts.append((fid, int(first)))
    if firsts:
        # lines before each file's first record (none is a record), and which of them are binary (counted already)
        for fid, before, before_binary in con.execute(
            f"""SELECT l.fid, count(*), count(*) FILTER (WHERE {binary})
                FROM {lines} l JOIN (SELECT unnest($1) AS fid, unnest($2) AS first) f
                  ON l.fid = f.fid AND l.line < f.first
                WHERE text <> '' GROUP BY l.fid""",
            [[f for f, _ in firsts], [n for _, n in firsts]],
        ).fetchall():
            census[fid].not_understood += int(before) - int(before_binary)
    return census


def prefilter(fmt: Format, definition: Definition) -> str | None:
    """A condition on raw lines that every line a rule can match satisfies, or None.

    With the format's `message_prefix` (the text just before the message, e.g. ': '), the rules' own
    patterns, unanchored and without captures, after that prefix: one DFA pass over the raw line.
    False positives are harmless (the exact match follows); false negatives cannot occur.
    """
    rules = definition.rules
    if fmt.kind != "lines" or not fmt.message_prefix or not rules:
        return None
    if any(r.input_field != "message" for r in rules):
        return None
    alternatives = [without_captures(r.match).removeprefix("^") for r in rules]
    pattern = re.escape(fmt.message_prefix) + "(?:" + "|".join(alternatives) + ")"
    return f"regexp_matches(text, {quote_literal(pattern)})"


def fields_used(fmt: Format, definition: Definition) -> set[str]:
    """The record fields anything reads: only these are captured (each capture costs a regex pass)."""
    used = {"message", fmt.time or "", fmt.local_time or ""}
    text = []
    for r in definition.rules:
        used.add(r.input_field)
        if r.logger:
            used.add("logger")
        text += [*r.derive.values()]
        for e in r.emit:
            text += [e.context, e.event or "", e.parent or "", e.link or "", e.alias or "", e.where or "", e.time or ""]
            text += [*e.attributes.values(), *e.event_attributes.values(), *e.each.values()]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(text)))
    return used | (words & set(definition.record_fields))


def file_table(con: duckdb.DuckDBPyConnection, name: str, files: list[SourceFile], default_clock: str) -> None:
    """Temp table `name`(fid, source, run_key, clock, path_0, …): what each file (fid: its index in `files`)
    gives its records. What comes from the run directory (the file's path, its path groups, the clock they
    name) travels as data, never written into SQL text."""
    definition = files[0].definition
    cols: dict[str, list] = {
        "fid": list(range(len(files))),
        "source": [f.rel for f in files],
        "run_key": [f.run_key for f in files],
        "clock": [file_clock(f.format.clock or default_clock, f.groups) for f in files],
    }
    for i, g in enumerate(definition.path_fields):
        cols[f"path_{i}"] = [f.groups.get(g) for f in files]
    select = ", ".join(
        f"unnest(${k}::{'INTEGER' if k == 'fid' else 'VARCHAR'}[]) AS {k}" for k in cols
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {select}", cols)


def record_sql(
    fmt: Format, definition: Definition, lines: str, files: str, used: set[str] | None = None
) -> str:
    """SQL giving one record row per line of the `lines` query (fid, line, text), each with what table
    `files` (file_table) says of its file; the patterns and names are the definition's."""
    if fmt.kind == "lines":
        assert fmt.record is not None
        record = fmt.record
        if used is not None:  # fields nobody reads are matched but not captured
            record = re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) in used else "(?:", record)
        names = list(group_names(record))
        pat = quote_literal(record)
        parsed = (
            f"SELECT fid, line, text, regexp_matches(text, {quote_literal(without_captures(record))}) AS is_record, "
            f"regexp_extract(text, {pat}, [{', '.join(quote_literal(n) for n in names)}]) AS r FROM ({lines})"
        )

        def fld(name: str | None) -> str:
            return f"nullif(r.{quote_ident(name)}, '')" if name and name in names else "NULL"

        message = "r.message"
    else:  # jsonl
        parsed = f"SELECT fid, line, text, json_valid(text) AS is_record, text AS r FROM ({lines})"
        known = set(fmt.fields) | {"message"}

        def fld(name: str | None) -> str:
            if not name or name not in known:
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
        "file.source",
        "file.run_key",
        "line",
        f"CAST({time_ns} AS BIGINT) AS time_ns",
        f"CAST({local_ns} AS BIGINT) AS local_ns",
        "file.clock",
        f"{message} AS message",
    ]
    cols += [f"{raw_text(n)}::VARCHAR AS {quote_ident(n)}" for n in definition.record_fields if n != "message"]
    cols += [f"file.path_{i} AS {quote_ident(g)}" for i, g in enumerate(definition.path_fields)]
    cols += ["is_record", "text"]
    return f"SELECT {', '.join(cols)} FROM ({parsed}) JOIN {files} AS file USING (fid)"


def file_clock(template: str, groups: dict[str, str | None]) -> str:
    """A format's clock may name the file's host by its path groups: 'manager:{manager}'."""
    return re.sub(r"\{(\w+)\}", lambda m: groups.get(m.group(1)) or "", template)


def group_names(pattern: str) -> tuple[str, ...]:
    p = re.compile(pattern)
    return tuple(sorted(p.groupindex, key=p.groupindex.__getitem__))
