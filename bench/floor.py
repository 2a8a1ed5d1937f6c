"""The floor: the least any converter of a run directory must do, measured to compare `replay` against.

    python bench/floor.py RUN_DIR       # prints a JSON object

1. DuckDB reads every line of every log file (one read_csv over all of them, with the options dnpc2otel's
   line reader uses: whole lines, no quoting, in parallel) and touches each line's text;
2. Python's sqlite3 reads every row of every table of monitoring.db.
The apps' own stdout/stderr files (task_logs/) are not logs and are left out.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import duckdb

NO_DELIMITER = "chr(31) || chr(30) || chr(29)"  # a delimiter no log line contains: DuckDB hands over whole lines


def log_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*")
                  if p.is_file() and not p.name.endswith(".db") and "task_logs" not in p.parts)


def read_lines(files: list[Path]) -> tuple[int, int]:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    row = con.execute(
        f"SELECT count(*), sum(strlen(text)) FROM read_csv(?, columns = {{'text': 'VARCHAR'}}, "
        f"delim = {NO_DELIMITER}, quote = '', escape = '', header = false, auto_detect = false, "
        f"strict_mode = false, max_line_size = {64 << 20})", [[str(f) for f in files]]).fetchone()
    con.close()
    return int(row[0]), int(row[1] or 0)


def read_tables(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = 0
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        cur = db.execute(f'SELECT * FROM "{table}"')
        while batch := cur.fetchmany(100_000):
            rows += len(batch)
    db.close()
    return rows


def main() -> int:
    run_dir = Path(sys.argv[1])
    files = log_files(run_dir)
    t = time.perf_counter()
    lines, chars = read_lines(files)
    lines_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = sum(read_tables(p) for p in sorted(run_dir.rglob("*.db")))
    sqlite_s = time.perf_counter() - t
    print(json.dumps({"files": len(files), "bytes": sum(f.stat().st_size for f in files), "lines": lines,
                      "chars": chars, "lines_s": round(lines_s, 3), "db_rows": rows, "sqlite_s": round(sqlite_s, 3),
                      "total_s": round(lines_s + sqlite_s, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
