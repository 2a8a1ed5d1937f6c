"""Replaying is idempotent: twice, or into an existing database, gives the same table contents and ids; a run
that grew since its last replay adds what is new without duplicating anything.

Contents are compared with the snapshot digests (tests/snapshot.py: one sha256 per table over its sorted rows,
the machine-specific `root` column left out), over real corpus runs.
"""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest
from conftest import CORPUS, copy_run
from snapshot import TABLES, table_digests

from dnpc2otel import replay

HTEX = CORPUS / "htex-2026" / "runinfo"
LOG = "000/parsl.log"


def ids(db) -> set[tuple]:
    with duckdb.connect(str(db), read_only=True) as c:
        return set(c.execute("SELECT trace_id, span_id, context_type FROM spans").fetchall())


@pytest.mark.parametrize("name", ["htex-2026", "features-2026", "wq-2026"])
def test_replaying_twice_gives_identical_tables_and_ids(name, tmp_path):
    run = CORPUS / name / "runinfo"
    replay(run, tmp_path / "a.duckdb")
    replay(run, tmp_path / "b.duckdb")
    a, b = table_digests(tmp_path / "a.duckdb"), table_digests(tmp_path / "b.duckdb")
    assert a == b
    assert all(a[t]["rows"] for t in ("spans", "observations", "sources"))
    assert ids(tmp_path / "a.duckdb") == ids(tmp_path / "b.duckdb")


def test_replaying_into_an_existing_database_replaces_without_duplicating(tmp_path):
    """Into its own previous output (again and again), and into a database that holds another run too: that
    run's rows stay as they were, this run's rows are those of a fresh replay."""
    fresh = tmp_path / "fresh.duckdb"
    replay(HTEX, fresh)
    same = tmp_path / "same.duckdb"
    for _ in range(3):
        replay(HTEX, same)
    assert table_digests(same) == table_digests(fresh)

    other = CORPUS / "htex-2023" / "runinfo"
    alone = tmp_path / "alone.duckdb"
    replay(other, alone)
    shared = tmp_path / "shared.duckdb"
    replay(other, shared)
    replay(HTEX, shared)
    replay(HTEX, shared)
    for table in TABLES:
        assert run_digest(shared, table, other) == run_digest(alone, table, other), table
        assert run_digest(shared, table, HTEX) == run_digest(fresh, table, HTEX), table
    assert run_digest(shared, "spans", HTEX)["rows"] > 0 and run_digest(shared, "spans", other)["rows"] > 0


def run_digest(db, table: str, run_dir) -> dict:
    """The snapshot digest (as tests/snapshot.py makes it) of the rows of one replayed run_dir in a table."""
    root = str(run_dir.resolve())
    with duckdb.connect(str(db), read_only=True) as con:
        have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] != "root"]
        select = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in have)
        where = "root = ?" if table == "sources" else "trace_id IN (SELECT trace_id FROM runs WHERE root = ?)"
        rows = sorted(json.dumps(list(r)) for r in con.execute(f"SELECT {select} FROM {table} WHERE {where}",
                                                              [root]).fetchall())
    return {"rows": len(rows), "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


@pytest.mark.parametrize("cut", ["at_a_line", "mid_line"])
def test_a_run_that_grew_adds_what_is_new_without_duplicates(cut, tmp_path):
    """Replay a run while its parsl.log is still being written (cut at a line, or inside one, as a writer
    leaves it), then again once the rest of the real log was appended: the database is that of a replay of
    the finished run, and the first replay held fewer observations."""
    run = copy_run(HTEX, tmp_path, without_db=True)
    log = run / LOG
    full = log.read_bytes()
    at = full.index(b"\n", len(full) // 2) + 1
    if cut == "mid_line":
        at += 40
    log.write_bytes(full[:at])
    db = tmp_path / "growing.duckdb"
    first = replay(run, db)
    assert bool(first.warnings) == (cut == "mid_line")
    with duckdb.connect(str(db), read_only=True) as c:
        (before,) = c.execute("SELECT count(*) FROM observations WHERE source = ?", [LOG]).fetchone()
    with open(log, "ab") as fh:
        fh.write(full[at:])
    second = replay(run, db)
    assert not second.warnings
    finished = tmp_path / "finished.duckdb"
    replay(run, finished)
    # every table, row for row (so nothing twice): the finished run's
    assert table_digests(db) == table_digests(finished)
    with duckdb.connect(str(db), read_only=True) as c:
        (after,) = c.execute("SELECT count(*) FROM observations WHERE source = ?", [LOG]).fetchone()
    assert 0 < before < after
