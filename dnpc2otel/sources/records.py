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


def count_records(con: duckdb.DuckDBPyConnection, fmt: Format, lines: str = "lines") -> LineCensus:
    """Records and lines not understood of a file, in one pass over its lines.

    A line not understood is a non-empty line that fits no record; in a multi-line format a text line after
    the first record continues it (tracebacks, config dumps), so only those before the first record count,
    and every line that is not text (binary garbage appended to a log is no traceback)."""
    is_record = is_record_sql(fmt)
    binary = f"regexp_matches(text, {quote_literal(NOT_TEXT)})"
    row = con.execute(
        f"""SELECT count(*) FILTER (WHERE r), min(line) FILTER (WHERE r),
                   count(*) FILTER (WHERE text <> '' AND NOT r),
                   count(*) FILTER (WHERE NOT r AND text <> '' AND {binary})
            FROM (SELECT line, text, {is_record} AS r FROM {lines})"""
    ).fetchone()
    records, first, misfits, binaries = (int(v or 0) for v in row) if row else (0, 0, 0, 0)
    if not fmt.multiline or not records:
        return LineCensus(records, misfits, binaries)
    # lines before the first record (none is a record), and which of them are binary (counted already)
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {binary}) FROM {lines} WHERE text <> '' AND line < $1", [first]
    ).fetchone()
    before, before_binary = (int(v or 0) for v in row) if row else (0, 0)
    return LineCensus(records, before + binaries - before_binary, binaries)


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


def record_sql(
    f: SourceFile, lines: str, default_clock: str, used: set[str] | None = None
) -> tuple[str, dict[str, str | None]]:
    """SQL giving one record row per line of the `lines` query (line, text), and its named parameters.

    What comes from the run directory (the file's path, its path groups, the clock they name) is bound
    as a parameter, never written into the SQL text; the patterns and names are the definition's."""
    fmt = f.format
    definition = f.definition
    if fmt.kind == "lines":
        assert fmt.record is not None
        record = fmt.record
        if used is not None:  # fields nobody reads are matched but not captured
            record = re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) in used else "(?:", record)
        names = list(group_names(record))
        pat = quote_literal(record)
        parsed = (
            f"SELECT line, text, regexp_matches(text, {quote_literal(without_captures(record))}) AS is_record, "
            f"regexp_extract(text, {pat}, [{', '.join(quote_literal(n) for n in names)}]) AS r FROM ({lines})"
        )

        def fld(name: str | None) -> str:
            return f"nullif(r.{quote_ident(name)}, '')" if name and name in names else "NULL"

        message = "r.message"
    else:  # jsonl
        parsed = f"SELECT line, text, json_valid(text) AS is_record, text AS r FROM ({lines})"
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
    params: dict[str, str | None] = {
        "source": f.rel, "run_key": f.run_key, "clock": file_clock(fmt.clock or default_clock, f.groups)
    }
    cols = [
        "$source::VARCHAR AS source",
        "$run_key::VARCHAR AS run_key",
        "line",
        f"CAST({time_ns} AS BIGINT) AS time_ns",
        f"CAST({local_ns} AS BIGINT) AS local_ns",
        "$clock::VARCHAR AS clock",
        f"{message} AS message",
    ]
    cols += [f"{raw_text(n)}::VARCHAR AS {quote_ident(n)}" for n in definition.record_fields if n != "message"]
    for i, g in enumerate(definition.path_fields):
        params[f"path_{i}"] = f.groups.get(g)
        cols.append(f"$path_{i}::VARCHAR AS {quote_ident(g)}")
    cols += ["is_record", "text"]
    return f"SELECT {', '.join(cols)} FROM ({parsed})", params


def file_clock(template: str, groups: dict[str, str | None]) -> str:
    """A format's clock may name the file's host by its path groups: 'manager:{manager}'."""
    return re.sub(r"\{(\w+)\}", lambda m: groups.get(m.group(1)) or "", template)


def group_names(pattern: str) -> tuple[str, ...]:
    p = re.compile(pattern)
    return tuple(sorted(p.groupindex, key=p.groupindex.__getitem__))
