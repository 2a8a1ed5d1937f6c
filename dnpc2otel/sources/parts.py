"""The sources stage's output as a file of its own, so that a run's files can be read by several processes.

A part is what `observe` made of some of a run's files: the `observed` tables (observations, sources) and
what was said of each file (FileStats, warnings in order), in one DuckDB file. `read` puts parts back into the
`observed` schema of a workspace, in the order given: with the parts cut from the files in the order
`observe` reads them, the tables, stats and warnings are those of one `observe` over all the files.

Files are the unit: a carried field is looked up in earlier lines of the same file, so a file is never cut.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb

from ..tables import OBSERVED, STAGE_OUTPUTS, insert
from .observer import FileStats
from .records import SourceFile
from .templates import quote_literal

_STATS = "part_file_stats"  # a FileStats per file, in observe's order (as JSON: the dataclass, whole)
_WARNINGS = "part_warnings"


def slices(files: list[SourceFile], definitions: list, size: int) -> list[list[SourceFile]]:
    """`files` in the order `observe` reads them (definition, then listing), cut into runs of about `size`
    bytes (a file larger than that is a slice alone)."""
    rank = {id(d): i for i, d in enumerate(definitions)}
    ordered = sorted(enumerate(files), key=lambda p: (rank[id(p[1].definition)], p[0]))
    out: list[list[SourceFile]] = []
    batch: list[SourceFile] = []
    total = 0
    for _, f in ordered:
        n = _size(f.path)
        if batch and total + n > size:
            out.append(batch)
            batch, total = [], 0
        batch.append(f)
        total += n
    if batch:
        out.append(batch)
    return out


def write(con: duckdb.DuckDBPyConnection, out: Path, stats: list[FileStats], warnings: list[str]) -> None:
    """Write `con`'s observed tables, `stats` and `warnings` to the DuckDB file `out` (replaced)."""
    out.unlink(missing_ok=True)
    con.execute(f"ATTACH {quote_literal(str(out))} AS part")
    try:
        for t in STAGE_OUTPUTS[OBSERVED]:
            con.execute(f"CREATE TABLE part.{t.name} AS SELECT * FROM {OBSERVED}.{t.name}")
        for name, column, values in ((_STATS, "stats", [json.dumps(dataclasses.asdict(s)) for s in stats]),
                                     (_WARNINGS, "warning", warnings)):
            con.execute(f"CREATE TABLE part.{name} AS SELECT generate_subscripts($1::VARCHAR[], 1) AS i, "
                        f"unnest($1::VARCHAR[]) AS {column}", [values])
    finally:
        con.execute("DETACH part")


def read(con: duckdb.DuckDBPyConnection, parts: list[Path]) -> tuple[list[FileStats], list[str]]:
    """Fill `con`'s (empty) observed tables from `parts`, in order; (their FileStats, their warnings)."""
    stats: list[FileStats] = []
    warnings: list[str] = []
    for i, path in enumerate(parts):
        con.execute(f"ATTACH {quote_literal(str(path))} AS part{i} (READ_ONLY)")
        try:
            for t in STAGE_OUTPUTS[OBSERVED]:
                insert(con, OBSERVED, t, f"SELECT {', '.join(t.column_names)} FROM part{i}.{t.name}")
            stats += [FileStats(**json.loads(s)) for (s,) in
                      con.execute(f"SELECT stats FROM part{i}.{_STATS} ORDER BY i").fetchall()]
            warnings += [w for (w,) in con.execute(f"SELECT warning FROM part{i}.{_WARNINGS} ORDER BY i").fetchall()]
        finally:
            con.execute(f"DETACH part{i}")
    return stats, warnings


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # said when it is read
        return 0
