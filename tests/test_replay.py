"""replay on real runs: the bundled corpus (tests/data/corpus, Parsl 2023 → 2026) and fresh runs made with
installed parsl."""

from __future__ import annotations

import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

import duckdb
import pytest
from conftest import copy_run, corpus_runs
from verify import NS, check_replay_against_monitoring, db_rows, log_lines

from dnpc2otel import replay

CORPUS = corpus_runs()
IDS = [p.parent.name for p in CORPUS]


@pytest.fixture(params=CORPUS, ids=IDS)
def corpus_run(request):
    return request.param


def _db_counts(db) -> dict[str, int]:
    """What the run's own monitoring.db says: tasks, tries, dependencies, and tasks that ended failed."""
    depends = [r[0] for r in db_rows(db, "SELECT task_depends FROM task")]
    failed = db_rows(db, """SELECT count(*) FROM task t WHERE (SELECT s.task_status_name FROM status s
        WHERE s.run_id = t.run_id AND s.task_id = t.task_id ORDER BY s.timestamp DESC LIMIT 1)
        IN ('failed', 'dep_fail')""")[0][0]
    return {"tasks": db_rows(db, "SELECT count(*) FROM task")[0][0],
            "tries": db_rows(db, "SELECT count(*) FROM try")[0][0],
            "dependencies": sum(len([d for d in (x or "").split(",") if d.strip()]) for x in depends),
            "failed_tasks": failed}


def test_corpus_run_matches_its_monitoring_db(corpus_run, tmp_path):
    out = tmp_path / "out.duckdb"
    summary = replay(corpus_run, out)
    counts = check_replay_against_monitoring(out, corpus_run / "monitoring.db", times="monitoring.db")
    want = _db_counts(corpus_run / "monitoring.db")
    # the mixed workflow: 31 tasks, 2 of them retried once, a combine on 20 tasks, a dependency failure (more in
    # features-2026 and mixkill-2026); the counts are the database's own
    assert counts["tasks"] == want["tasks"] >= 31 and counts["tries"] == want["tries"] >= 33
    assert counts["dependencies"] == want["dependencies"] >= 22
    assert counts["failed_tasks"] == want["failed_tasks"] >= 3
    assert summary.lines_not_understood == 0
    assert {s.source for s in summary.sources} >= {"monitoring.db"}


def test_corpus_run_from_logs_alone(corpus_run, tmp_path):
    """Without monitoring.db, parsl.log (or parsl.jsonlog) alone gives the same tasks, tries and links, each
    try timed exactly by the log lines that bound it."""
    if not any((corpus_run / "000").glob("parsl.*log")):
        pytest.skip("made without parsl.log (initialize_logging=False): without monitoring.db nothing names a run")
    logs_only = copy_run(corpus_run, tmp_path, without_db=True)
    out = tmp_path / "logs.duckdb"
    summary = replay(logs_only, out)
    assert all(s.converter != "monitoring_db" for s in summary.sources)
    counts = check_replay_against_monitoring(out, corpus_run / "monitoring.db", times="parsl.log")
    want = _db_counts(corpus_run / "monitoring.db")
    assert counts["tries"] == want["tries"] and counts["dependencies"] == want["dependencies"]
    assert counts["timed_tries"] == want["tries"]  # the try of the dependency failure too: its 'failed' line


def test_one_run_directory_of_a_run_dir(corpus_run, tmp_path):
    if not any((corpus_run / "000").glob("parsl.*log")):
        pytest.skip("made without parsl.log: runinfo/000 alone holds no file that names its run")
    out = tmp_path / "one.duckdb"
    summary = replay(corpus_run / "000", out)
    assert [r["run_dir"] for r in summary.runs] == ["000"]
    check_replay_against_monitoring(out, corpus_run / "monitoring.db", times="monitoring.db")


def test_shared_monitoring_db_of_several_runs(tmp_path):
    """Two runs in one run_dir, one monitoring.db keyed by run_id: two traces, each with its own tasks."""
    src = CORPUS[0]
    run_dir = tmp_path / "runinfo"
    shutil.copytree(src, run_dir)
    # a second run directory: the same logs under 001 with another run id, and its rows in the database
    shutil.copytree(run_dir / "000", run_dir / "001")
    old = duckdb.connect().execute(
        "SELECT regexp_extract(content, 'Run id is: ([0-9a-f-]+)', 1) FROM read_text(?)",
        [str(run_dir / "000" / "parsl.log") if (run_dir / "000" / "parsl.log").exists()
         else str(run_dir / "000" / "parsl.jsonlog")],
    ).fetchone()[0]
    new = "00000000-0000-4000-8000-000000000001"
    for log in (run_dir / "001").glob("parsl.*log"):
        log.write_text(log.read_text().replace(old, new))
    import sqlite3

    db = sqlite3.connect(run_dir / "monitoring.db")
    for table in ("workflow", "task", "try", "status", "block", "resource", "node"):
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        new_value = {"run_id": "?", "rundir": "replace(rundir, '/000', '/001')", "id": "NULL"}  # NULL: a fresh rowid
        sel = ", ".join(new_value.get(c, c) for c in cols)
        db.execute(f"INSERT INTO {table} SELECT {sel} FROM {table} WHERE run_id = ?", (new, old))
    db.commit()
    db.close()
    out = tmp_path / "two.duckdb"
    summary = replay(run_dir, out)
    assert sorted(r["run_dir"] for r in summary.runs) == ["000", "001"]
    assert len({r["trace_id"] for r in summary.runs}) == 2
    check_replay_against_monitoring(out, run_dir / "monitoring.db", times="monitoring.db")
    only = replay(run_dir / "001", tmp_path / "only.duckdb")
    assert [r["run_id"] for r in only.runs] == [new]


def _dump(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = ["spans", "span_events", "span_links", "observations", "runs", "sources"]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
    finally:
        con.close()


def test_replay_twice_gives_identical_content_and_ids(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    replay(CORPUS[0], a)
    replay(CORPUS[0], b)
    da, db = _dump(a), _dump(b)
    assert da == db
    assert len(da["spans"]) > 60


def test_replay_into_existing_database_does_not_duplicate(tmp_path):
    out = tmp_path / "same.duckdb"
    replay(CORPUS[0], out)
    first = _dump(out)
    replay(CORPUS[0], out)
    assert _dump(out) == first
    # a second run_dir added to the same database: both present, neither duplicated
    replay(CORPUS[1], out)
    both = _dump(out)
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT count(DISTINCT trace_id) FROM spans").fetchone()[0] == 2
    assert con.execute("SELECT count(*) - count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()[0] == 0
    con.close()
    assert len(both["spans"]) > len(first["spans"])


def test_fresh_htex_run(fresh_htex, tmp_path):
    out = tmp_path / "fresh.duckdb"
    replay(fresh_htex, out)
    counts = check_replay_against_monitoring(out, fresh_htex / "monitoring.db", times="monitoring.db")
    # 8 work + 3 flaky (2 retried) + 2 combine + 2 shell
    assert counts["tasks"] == 15 and counts["tries"] == 17
    # from parsl.log alone: the same tasks and tries, timed by the log's own lines (the DFK and monitoring
    # stamp the same moment some ms apart on a busy machine: that is for the disagreements table)
    logs = copy_run(fresh_htex, tmp_path, without_db=True)
    replay(logs, tmp_path / "logs.duckdb")
    counts = check_replay_against_monitoring(tmp_path / "logs.duckdb", fresh_htex / "monitoring.db", times="parsl.log")
    assert counts["tries"] == 17 and counts["timed_tries"] == 17


def test_local_time_zone_is_inferred(fresh_threads_chicago, tmp_path):
    """Naive local times (monitoring.db) of a run in America/Chicago land on the right UTC instant."""
    out = tmp_path / "chicago.duckdb"
    summary = replay(fresh_threads_chicago, out)
    offset = summary.runs[0]["utc_offset_seconds"]
    # Chicago's offset at the instant the run began (parsl.log's first epoch stamp), CST or CDT
    began = min(t for t, _ in log_lines(fresh_threads_chicago / "000" / "parsl.log").values())
    assert offset == datetime.fromtimestamp(began / NS, ZoneInfo("America/Chicago")).utcoffset().total_seconds()
    assert summary.runs[0]["offset_source"].startswith("inferred")
    check_replay_against_monitoring(out, fresh_threads_chicago / "monitoring.db", times="monitoring.db")
    # --timezone overrides the inference: with a wrong zone every time of the database (which bounds the
    # tries) moves by exactly the zones' difference
    wrong = tmp_path / "wrong.duckdb"
    replay(fresh_threads_chicago, wrong, timezone="+00:00")
    con = duckdb.connect(str(wrong), read_only=True)
    row = con.execute("SELECT utc_offset_seconds, offset_source FROM runs").fetchone()
    con.close()
    assert row[0] == 0 and "given" in row[1]
    right_starts, wrong_starts = _try_starts(out), _try_starts(wrong)
    assert right_starts and set(right_starts) == set(wrong_starts)
    assert {wrong_starts[k] - right_starts[k] for k in right_starts} == {offset * NS}


def _try_starts(db) -> dict[str, int]:
    """Start of each try span timed by monitoring.db, by try id."""
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute(
            """SELECT attributes->>'$."dnpc.context_id"', start_time_unix_nano FROM spans
               WHERE context_type = 'try' AND attributes->>'$."dnpc.bounds.source"' = 'monitoring_db'"""
        ).fetchall())


def test_memoized_tries_from_either_source(fresh_threads_chicago, tmp_path):
    """A cached app re-run after its result is known: memo hits are tries that end memo_done, from the
    database and from parsl.log alone."""
    full = tmp_path / "memo.duckdb"
    replay(fresh_threads_chicago, full)
    counts = check_replay_against_monitoring(full, fresh_threads_chicago / "monitoring.db", times="monitoring.db")
    assert counts["tasks"] == 18 and counts["tries"] == 20  # 15 + three calls of the cached app
    logs = copy_run(fresh_threads_chicago, tmp_path, without_db=True)
    replay(logs, tmp_path / "logs.duckdb")
    # a thread pool's result is logged a little after monitoring stamps it: the logs-only tries are checked
    # against the log's own lines (memo hits: 'using result from cache' … 'Reusing cached result')
    counts = check_replay_against_monitoring(tmp_path / "logs.duckdb", fresh_threads_chicago / "monitoring.db",
                                             times="parsl.log")
    assert counts["timed_tries"] == 20
    for db in (full, tmp_path / "logs.duckdb"):
        with duckdb.connect(str(db), read_only=True) as c:
            memo = c.execute("""SELECT count(*) FROM tries t JOIN tasks k ON k.span_id = t.task_span_id
                                WHERE k.app = 'cached' AND t.final_state = 'memo_done'""").fetchone()
        assert memo == (2,)
