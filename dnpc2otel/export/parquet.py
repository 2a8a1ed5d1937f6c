"""`dnpc2otel export DB --parquet DIR`: every table of a dnpc2otel DuckDB file as a Parquet file, for other
engines (Spark, Polars, pandas, DataFusion …): DIR/<table>.parquet for the declared tables, the
`span_events` view and `dnpc2otel_meta`; with `analysis`, also DIR/analysis/<view>.parquet for each view
and table of the analysis schema (its table macros need parameters and are left out)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ..analysis.session import open_db
from ..errors import UserError, first_line
from ..sources.templates import quote_ident, quote_literal
from ..tables import ANALYSIS, OUTPUT


def export_parquet(database: str | Path, directory: str | Path, analysis: bool = False) -> list[Path]:
    """Write the Parquet files; returns their paths."""
    db = Path(database)
    if not db.is_file():
        raise UserError(f"{database}: no such DuckDB file")
    out = Path(directory)
    names = [t.name for t in OUTPUT] + ["span_events", "dnpc2otel_meta"]
    con = open_db(db) if analysis else _connect(db)
    written: list[Path] = []
    try:
        present = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "UNION ALL SELECT view_name FROM duckdb_views() WHERE schema_name = 'main'").fetchall()}
        missing = [n for n in names if n not in present]
        if missing:
            raise UserError(f"{database}: not a dnpc2otel database (no {', '.join(missing)})")
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            written.append(_copy(con, quote_ident(name), out / f"{name}.parquet"))
        if analysis:
            (out / ANALYSIS).mkdir(exist_ok=True)
            views = [r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE schema_name = $s "
                "UNION ALL SELECT table_name FROM duckdb_tables() WHERE schema_name = $s ORDER BY 1", {"s": ANALYSIS}
            ).fetchall()]
            for name in views:
                written.append(_copy(con, f"{ANALYSIS}.{quote_ident(name)}", out / ANALYSIS / f"{name}.parquet"))
    finally:
        con.close()
    return written


def _copy(con: duckdb.DuckDBPyConnection, relation: str, target: Path) -> Path:
    # written beside the target, then renamed: a failed export leaves no half-written file
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        con.execute(f"COPY (SELECT * FROM {relation}) TO {quote_literal(str(tmp))} (FORMAT parquet)").fetchall()
        tmp.replace(target)
    except duckdb.Error as e:
        raise UserError(f"{target}: cannot write Parquet ({first_line(e)})") from None
    except OSError as e:
        raise UserError(f"{target}: cannot write ({e.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _connect(db: Path) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as e:
        raise UserError(f"{db}: cannot open as a DuckDB database ({first_line(e)})") from None
    con.execute("SET enable_progress_bar = false")
    return con
