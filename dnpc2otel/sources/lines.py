"""Reading a log file into a DuckDB table of numbered lines, whatever its bytes, noting how it is damaged.

Damage a file can show, and what is done with it (`LineDamage`; the observer says it in one warning):
- cut mid-line: the file does not end with a newline (a crash, a copy cut short, a run still writing it).
  The unfinished last line is not read: its values may be cut (an executor label "htex_Loc").
- invalid bytes: bytes that are not UTF-8, and NUL bytes (no log writes them; a crash can leave blocks of
  them), each replaced by U+FFFD; the line is read with the replacement.
- over-long lines: a line over MAX_LINE_BYTES (a binary blob without newlines) is not read; memory stays
  bounded however long it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

CHUNK_BYTES = 32 << 20
# a delimiter no log line contains, so that DuckDB's parallel CSV reader hands over whole lines
_NO_DELIMITER = "chr(31) || chr(30) || chr(29)"
MAX_LINE_BYTES = 64 << 20
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")  # an undecodable byte, as surrogateescape gives it


@dataclass
class LineDamage:
    size: int = 0  # the bytes the file held when it was read
    invalid_bytes: int = 0  # bytes not UTF-8, and NUL bytes: replaced by U+FFFD
    cut_bytes: int = 0  # bytes of the unfinished last line (no newline after it): not read
    long_lines: int = 0  # lines over MAX_LINE_BYTES: not read

    @property
    def cut(self) -> bool:
        return self.cut_bytes > 0


def load_lines(con: duckdb.DuckDBPyConnection, path: Path, table: str = "lines") -> LineDamage:
    """Create temp table `table`(line, text) of a file's whole lines; returns how the file is damaged.

    DuckDB's CSV reader (parallel, order-preserving) is the fast path; a file with bytes that are not
    UTF-8, or with a line over MAX_LINE_BYTES, is read again in Python, chunk by chunk.
    """
    size = path.stat().st_size  # what the file holds now: a run may still be writing it
    damage = LineDamage(size)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT row_number() OVER () AS line, coalesce(text, '') AS text "
            f"FROM read_csv(?, columns = {{'text': 'VARCHAR'}}, delim = {_NO_DELIMITER}, quote = '', escape = '', "
            f"header = false, auto_detect = false, strict_mode = false, max_line_size = {MAX_LINE_BYTES})",
            [str(path)],
        )
    except duckdb.Error:
        return _load_in_chunks(con, path, table, size)
    if path.stat().st_size != size:  # it grew while DuckDB read it: read exactly the bytes it held before
        return _load_in_chunks(con, path, table, size)
    # valid UTF-8 may still hold NUL bytes (a crash's zero-filled blocks): replaced as in the slow path
    row = con.execute(
        f"SELECT sum(strlen(text) - strlen(replace(text, chr(0), ''))) FROM {table} WHERE contains(text, chr(0))"
    ).fetchone()
    damage.invalid_bytes = int(row[0] or 0) if row else 0
    if not _ends_with_newline(path, size):
        row = con.execute(f"SELECT line, strlen(text) FROM {table} ORDER BY line DESC LIMIT 1").fetchone()
        if row:
            con.execute(f"DELETE FROM {table} WHERE line = ?", [row[0]])
            damage.cut_bytes = max(int(row[1]), 1)
    if damage.invalid_bytes:
        con.execute(f"UPDATE {table} SET text = replace(text, chr(0), chr(65533)) WHERE contains(text, chr(0))")
    return damage


def load_files(con: duckdb.DuckDBPyConnection, paths: list[Path], table: str = "lines") -> list[LineDamage | OSError]:
    """Create temp table `table`(fid, line, text) of the whole lines of each file (fid: its index in `paths`);
    returns how each file is damaged, or why it could not be read.

    One parallel scan reads every file that looks whole (not empty, ending with a newline): a statement per
    file costs milliseconds, and a campaign has 10^4–10^5 small logs. A file that turns out not to be (bytes
    that are not UTF-8 fail the scan; a file still growing), and one that does not look whole, is read alone
    by `load_lines`, as before.
    """
    results: list[LineDamage | OSError] = []
    together: list[int] = []
    for i, path in enumerate(paths):
        try:
            size = path.stat().st_size
            whole = bool(size) and _ends_with_newline(path, size)
        except OSError as e:  # unreadable (permissions), vanished since it was listed
            results.append(e)
            continue
        results.append(LineDamage(size))
        if whole:
            together.append(i)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (fid INTEGER, line BIGINT, text VARCHAR)")
    scanned = set(together)
    alone = [i for i, r in enumerate(results) if isinstance(r, LineDamage) and r.size and i not in scanned]
    if len(together) > 1:
        alone += _load_together(con, paths, together, results, table)
    else:
        alone += together
    for i in sorted(alone):
        try:
            results[i] = load_lines(con, paths[i], f"{table}_one")
        except OSError as e:
            results[i] = e
            continue
        con.execute(f"INSERT INTO {table} SELECT $1, line, text FROM {table}_one", [i])
        con.execute(f"DROP TABLE {table}_one")
    return results


def _load_together(
    con: duckdb.DuckDBPyConnection, paths: list[Path], fids: list[int], results: list[LineDamage | OSError], table: str
) -> list[int]:
    """Read files `fids` in one scan into `table`; returns those to be read alone after all."""
    names = [str(paths[i]) for i in fids]
    try:
        # row_number() over the scan numbers lines in file order (insertion order is preserved); a file's
        # lines are then counted from its first
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}_scan AS SELECT filename, row_number() OVER () AS n, "
            f"coalesce(text, '') AS text FROM read_csv(?, columns = {{'text': 'VARCHAR'}}, "
            f"delim = {_NO_DELIMITER}, quote = '', escape = '', header = false, auto_detect = false, "
            f"strict_mode = false, max_line_size = {MAX_LINE_BYTES}, filename = true)",
            [names],
        )
    except duckdb.Error:  # bytes that are not UTF-8 somewhere, a file gone: each file alone says which
        return fids
    try:
        grown = []
        for i in fids:
            try:
                if paths[i].stat().st_size != results[i].size:  # type: ignore[union-attr]
                    grown.append(i)
            except OSError:
                grown.append(i)
        con.execute(
            f"""INSERT INTO {table}
                SELECT f.fid, s.n - s0.first + 1, s.text
                FROM {table}_scan s
                JOIN (SELECT filename, min(n) AS first FROM {table}_scan GROUP BY filename) s0 USING (filename)
                JOIN (SELECT unnest($1) AS filename, unnest($2) AS fid) f USING (filename)
                WHERE NOT list_contains($3::INTEGER[], f.fid)""",
            [names, fids, grown],
        )
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}_scan")
    nul = con.execute(
        f"SELECT fid, sum(strlen(text) - strlen(replace(text, chr(0), ''))) FROM {table} "
        "WHERE contains(text, chr(0)) GROUP BY fid"
    ).fetchall()
    for i, n in nul:  # valid UTF-8 may still hold NUL bytes (a crash's zero-filled blocks)
        results[i].invalid_bytes = int(n)  # type: ignore[union-attr]
    if nul:
        con.execute(f"UPDATE {table} SET text = replace(text, chr(0), chr(65533)) WHERE contains(text, chr(0))")
    return grown


def _ends_with_newline(path: Path, size: int) -> bool:
    if size == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _load_in_chunks(con: duckdb.DuckDBPyConnection, path: Path, table: str, size: int) -> LineDamage:
    damage = LineDamage(size)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (line BIGINT, text VARCHAR)")
    line0 = 0
    for text, n_lines in _chunks(path, damage, size):
        if text is not None:
            insert_text(con, text, line0, table)
        line0 += n_lines
    # a line over the limit that fitted in one read (the limit exceeds a chunk, so only just): not read either
    row = con.execute(f"SELECT count(*) FROM {table} WHERE strlen(text) > {MAX_LINE_BYTES}").fetchone()
    if row and row[0]:
        damage.long_lines += int(row[0])
        con.execute(f"DELETE FROM {table} WHERE strlen(text) > {MAX_LINE_BYTES}")
    return damage


def insert_text(con: duckdb.DuckDBPyConnection, text: str, line0: int = 0, table: str = "lines") -> None:
    """Append the lines of `text` (no trailing newline) numbered from line0 + 1."""
    con.execute(
        f"INSERT INTO {table} SELECT generate_subscripts(l, 1) + $2 AS line, unnest(l) AS text "
        "FROM (SELECT string_split($1, chr(10)) AS l)",
        [text, line0],
    )


def _chunks(path: Path, damage: LineDamage, size: int) -> Iterator[tuple[str | None, int]]:
    """Yield (text of whole lines, or None for a line not read; the number of lines) for large chunks of the
    file's first `size` bytes.

    A line growing past MAX_LINE_BYTES is dropped as it is read, so that no amount of bytes without a
    newline fills the memory; it still takes its line number."""
    with open(path, "rb") as fh:
        rest = b""
        skipped = -1  # ≥ 0: inside an over-long line, this many of its bytes skipped so far
        left = size
        while left > 0 and (block := fh.read(min(CHUNK_BYTES, left))):
            left -= len(block)
            if skipped >= 0:
                nl = block.find(b"\n")
                if nl < 0:
                    skipped += len(block)
                    continue
                block = block[nl + 1 :]
                skipped = -1
                damage.long_lines += 1
                yield None, 1
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
            else:
                rest = data[cut + 1 :]
                yield _decode(data[: cut + 1], damage)
            if len(rest) > MAX_LINE_BYTES:
                skipped, rest = len(rest), b""
        if skipped >= 0:  # the file ends inside an over-long line
            damage.long_lines += 1
            damage.cut_bytes = skipped
        elif rest:  # the unfinished last line: counted, not read
            damage.invalid_bytes += _count_invalid(rest)
            damage.cut_bytes = len(rest)


def _count_invalid(data: bytes) -> int:
    text = data.decode("utf-8", "surrogateescape")
    return len(_LONE_SURROGATE.findall(text)) + text.count("\x00")


def _decode(data: bytes, damage: LineDamage) -> tuple[str, int]:
    text = data.decode("utf-8", "surrogateescape")
    text, bad = _LONE_SURROGATE.subn("\ufffd", text)
    if "\x00" in text:  # NUL cannot travel in a SQL string parameter
        bad += text.count("\x00")
        text = text.replace("\x00", "\ufffd")
    damage.invalid_bytes += bad
    n = text.count("\n")
    return text[:-1] if text.endswith("\n") else text, n
