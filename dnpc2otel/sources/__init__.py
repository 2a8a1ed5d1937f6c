"""Stage 1, sources: the files of a run directory → table `observed.observations` (+ `observed.sources`).

Converter definitions (converters/*.toml, validated against converters/definition.schema.json) say which
files they read, how records are parsed and how records become observations; this stage finds the files
(`rundir`), reads them (`lines`, `records`, `sqlite`, `jsondoc`), runs the rules (`rules`) and checks the definitions'
own samples (`samples`). It knows nothing of spans.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from ..tables import OBSERVED, SOURCES, create_stage
from .definitions import Catalog
from .observer import FileStats, Observer
from .records import SourceFile

__all__ = ["FileStats", "SourceFile", "observe"]


def observe(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    files: list[SourceFile],
    root: Path,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_warning: Callable[[str], None] = lambda msg: None,
) -> list[FileStats]:
    """Fill the `observed` tables from `files`; returns what was read of each file."""
    create_stage(con, OBSERVED)
    observer = Observer(con, catalog.system.reference_clock, on_bytes=on_bytes, on_warning=on_warning)
    for d in catalog.definitions:
        observer.observe(d, [f for f in files if f.definition is d])
    rows = [
        (str(root), s.source, s.converter, s.format, s.bytes, s.lines, s.records, s.records_used, s.observations,
         s.not_understood, s.invalid_bytes, s.warning)
        for s in observer.stats
    ]
    if rows:
        con.executemany(
            f"INSERT INTO {OBSERVED}.{SOURCES.name} VALUES ({', '.join('?' for _ in SOURCES.columns)})", rows
        )
    return observer.stats
