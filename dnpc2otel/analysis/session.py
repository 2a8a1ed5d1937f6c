"""`dnpc2otel.open(path)`: a DuckDB connection with the analysis views ready, from a DuckDB file this tool
wrote or from a run directory (replayed on the fly into memory, the run directory only read).

    db = dnpc2otel.open("runinfo")
    db.sql("SELECT * FROM analysis.task_breakdown").df()
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

from ..errors import UserError, first_line
from ..sources.templates import quote_literal
from . import create, present, written_by_us


def open_db(path: str | Path, duckdb_path: str | Path | None = None, read_only: bool = True,
            **replay_options) -> duckdb.DuckDBPyConnection:
    """A connection to the DuckDB file at `path`, or to a replay of the run directory at `path` (into
    `duckdb_path` if given, else into memory). `replay_options` go to `dnpc2otel.replay` (timezone, …)."""
    p = Path(path)
    if p.is_dir():
        return _replayed(p, duckdb_path, read_only, replay_options)
    if not p.is_file():
        raise UserError(f"{path}: no such DuckDB file or run directory")
    return _file(p, read_only)


def _replayed(rundir: Path, duckdb_path, read_only: bool, options: dict) -> duckdb.DuckDBPyConnection:
    from ..pipeline import replay

    if duckdb_path is not None:
        replay(rundir, duckdb_path, **options)
        return _file(Path(duckdb_path), read_only)
    with tempfile.TemporaryDirectory(prefix="dnpc2otel-open-") as tmp:
        target = Path(tmp) / "replay.duckdb"
        replay(rundir, target, **options)
        return _in_memory(target)


def _file(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = _connect(path, read_only=True)
    try:
        if not written_by_us(con):
            raise UserError(f"{path}: a DuckDB database, but not one dnpc2otel wrote (no table dnpc2otel_meta)")
        if present(con):
            if read_only:
                return con
            con.close()
            return _connect(path, read_only=False)
    except BaseException:
        con.close()
        raise
    con.close()
    # written by an older version (or views dropped): give the file the current views, else work on a copy
    if os.access(path, os.W_OK):
        con = _connect(path, read_only=False)
        try:
            create(con)
        except duckdb.Error as e:
            con.close()
            raise UserError(f"{path}: not a dnpc2otel database the analysis views fit ({first_line(e)})") from None
        if not read_only:
            return con
        con.close()
        return _connect(path, read_only=True)
    return _in_memory(path)


def _in_memory(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"ATTACH {quote_literal(str(path))} AS src (READ_ONLY)")
    con.execute("COPY FROM DATABASE src TO memory")
    con.execute("DETACH src")
    if not present(con):
        create(con)
    return con


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as e:
        raise UserError(f"{path}: cannot open as a DuckDB database ({first_line(e)})") from None
    con.execute("SET enable_progress_bar = false")
    return con
