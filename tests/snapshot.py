"""Content snapshots of replayed DuckDB files: one digest per output table, independent of row order and of
where the repository lies (the absolute `root` column is left out).

`python tests/snapshot.py --update` rewrites tests/data/corpus-snapshot.json from the current code; the test
`test_snapshot.py` checks that every bundled corpus run still replays to the same content. A change that is
meant to alter the output regenerates the file in the same commit, so its diff shows which tables moved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "data" / "corpus-snapshot.json"
CORPUS = HERE / "data" / "corpus"
# columns that name the machine's paths, not the run's content
VOLATILE = {"root"}
TABLES = ("spans", "span_links", "span_events", "observations", "disagreements", "clocks", "runs", "sources")


def table_digests(db: Path, columns: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """{table: {"rows": n, "sha256": digest, "columns": [...]}}; `columns` restricts each table's columns
    (those of an older snapshot), so that a new column does not hide a change in the old ones."""
    out: dict[str, dict] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for table in TABLES:
            have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in VOLATILE]
            cols = [c for c in (columns or {}).get(table, have) if c in have] if columns else have
            select = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in cols)
            rows = sorted(json.dumps(list(r)) for r in con.execute(f"SELECT {select} FROM {table}").fetchall())
            h = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            out[table] = {"rows": len(rows), "sha256": h, "columns": cols}
    return out


def corpus_runs() -> list[Path]:
    return sorted(p / "runinfo" for p in CORPUS.iterdir() if (p / "runinfo").is_dir())


def replay_digests(run: Path, workdir: Path, columns: dict[str, list[str]] | None = None) -> dict[str, dict]:
    from dnpc2otel import replay
    out = workdir / f"{run.parent.name}.duckdb"
    replay(run, out)
    return table_digests(out, columns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--update", action="store_true", help="rewrite the snapshot from the current code")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = {run.parent.name: replay_digests(run, Path(tmp)) for run in corpus_runs()}
    if args.update:
        SNAPSHOT.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT}")
        return 0
    print(json.dumps(got, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
