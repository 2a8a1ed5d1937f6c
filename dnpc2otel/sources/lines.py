"""Reading a log file into a DuckDB table of numbered lines, whatever its bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb

CHUNK_BYTES = 32 << 20
# a delimiter no log line contains, so that DuckDB's parallel CSV reader hands over whole lines
_NO_DELIMITER = "chr(31) || chr(30) || chr(29)"
MAX_LINE_BYTES = 64 << 20


def load_lines(con: duckdb.DuckDBPyConnection, path: Path, table: str = "lines") -> bool:
    """Create temp table `table`(line, text) of a file; returns whether invalid bytes were replaced.

    DuckDB's CSV reader (parallel, order-preserving) is the fast path; a file with bytes that are not
    UTF-8 is read again in Python, chunk by chunk, with those bytes replaced.
    """
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT row_number() OVER () AS line, coalesce(text, '') AS text "
            f"FROM read_csv(?, columns = {{'text': 'VARCHAR'}}, delim = {_NO_DELIMITER}, quote = '', escape = '', "
            f"header = false, auto_detect = false, strict_mode = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
        return False
    except duckdb.Error:
        pass
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (line BIGINT, text VARCHAR)")
    line0 = 0
    invalid = False
    for text, n_lines, _nbytes, bad in _chunks(path):
        invalid |= bad
        insert_text(con, text, line0, table)
        line0 += n_lines
    return invalid


def insert_text(con: duckdb.DuckDBPyConnection, text: str, line0: int = 0, table: str = "lines") -> None:
    """Append the lines of `text` (no trailing newline) numbered from line0 + 1."""
    con.execute(
        f"INSERT INTO {table} SELECT generate_subscripts(l, 1) + $2 AS line, unnest(l) AS text "
        "FROM (SELECT string_split($1, chr(10)) AS l)",
        [text, line0],
    )


def _chunks(path: Path) -> Iterator[tuple[str, int, int, bool]]:
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
