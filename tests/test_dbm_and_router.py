"""The monitoring database manager's and router's own logs: each of their line forms is read, and each
process becomes one span under the run's workflow, from the first line of its log to the last."""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run

from dnpc2otel import replay
from dnpc2otel.sources.definitions import builtin_dir, load

# a record's first field: the epoch (parsl.log format) or the naive local time (older short forms)
STAMP = re.compile(r"^(?:(?P<created>\d+\.\d+) )?(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ")


def line_ns(line: str, utc_offset_s: int) -> int | None:
    """A log line's time in epoch ns, exactly as written (None for a continuation line)."""
    m = STAMP.match(line)
    if not m:
        return None
    if m["created"]:
        return int(Decimal(m["created"]) * 10**9)
    day, _, frac = m["asctime"].partition(".")
    naive = calendar.timegm(datetime.strptime(day, "%Y-%m-%d %H:%M:%S").timetuple())
    return (naive - utc_offset_s) * 10**9 + int((frac or "0").ljust(9, "0")[:9])


def first_and_last_ns(path: Path, utc_offset_s: int = 0) -> tuple[int, int]:
    stamps = [t for t in (line_ns(ln, utc_offset_s) for ln in path.read_text().splitlines()) if t is not None]
    return stamps[0], stamps[-1]


def spans_of(db: Path, context_type: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            """SELECT s.span_id, s.start_time_unix_nano, s.end_time_unix_nano, p.context_type
               FROM spans s LEFT JOIN spans p ON p.span_id = s.parent_span_id WHERE s.context_type = ?""",
            [context_type],
        ).fetchall()


def events_of(db: Path, span_id: str) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [e for (e,) in con.execute(
            "SELECT name FROM span_events WHERE span_id = ? ORDER BY time_unix_nano, name", [span_id]).fetchall()]


def utc_offset(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT utc_offset_seconds FROM runs").fetchone()[0]


def test_filelogging_database_manager_log_is_read_whole(tmp_path):
    """Config(initialize_logging=FileLogging()) writes database_manager.log in the parsl.log format: every
    line is a record, and the database manager spans the file from its first line to its last."""
    run = CORPUS / "filelogging-2026" / "runinfo"
    log = run / "000" / "database_manager.log"
    db = tmp_path / "fl.duckdb"
    summary = replay(run, db)
    stats = next(s for s in summary.sources if s.source == "000/database_manager.log")
    assert (stats.not_understood, stats.warning) == (0, None)
    assert stats.records == len(log.read_text().splitlines())
    assert summary.lines_not_understood == 0
    (_, start, end, parent), *more = spans_of(db, "database_manager")
    assert not more and parent == "workflow"
    assert (start, end) == first_and_last_ns(log)


@pytest.mark.parametrize("name, rel", [
    ("htex-2023", "000/monitoring_router.log"),                  # ≤ 2025.03.03: in the run directory
    ("htex-2026", "000/worker_pool/monitoring_zmq_router.log"),  # 2025.03.24+: in the HTEX folder
    ("htex-json-2026", "000/worker_pool/monitoring_zmq_router.log"),
])
def test_router_log_is_one_span_under_the_workflow(tmp_path, name, rel):
    run = CORPUS / name / "runinfo"
    db = tmp_path / "r.duckdb"
    summary = replay(run, db)
    assert summary.contexts.get("monitoring_router") == 1
    stats = next(s for s in summary.sources if s.source == rel)
    assert stats.converter == "monitoring_router" and stats.not_understood == 0
    (span, start, end, parent), *more = spans_of(db, "monitoring_router")
    assert not more and parent == "workflow"
    # the 2023 log has naive local times: the run's inferred offset turns them into epoch time
    assert (start, end) == first_and_last_ns(run / rel, utc_offset(db))
    events = events_of(db, span)
    assert "started" in events and events.count("finished") == 1, events
    with duckdb.connect(str(db), read_only=True) as con:
        assert not con.execute("SELECT * FROM disagreements WHERE context_type = 'monitoring_router'").fetchall()


def test_two_listener_router_names_its_listeners(tmp_path):
    """2024.08 → 2025.03.03: one router process with a UDP and a ZMQ listener thread. Its start is the first
    start line, its end the last 'finished' one; the listeners' own lines in between are listener events."""
    router = load(builtin_dir() / "parsl_monitoring_router.toml")
    lines = [ln for r in router.rules if r.name in ("router_start", "router_finished")
             for s in r.samples if s["release"] == "2025.3.3" and "lines" in s for ln in s["lines"]]
    assert len(lines) == 8
    run = copy_run(CORPUS / "htex-2023" / "runinfo", tmp_path)
    (run / "000" / "monitoring_router.log").write_text("\n".join(lines) + "\n")
    db = tmp_path / "two.duckdb"
    replay(run, db)
    (span, start, end, parent), *more = spans_of(db, "monitoring_router")
    assert not more and parent == "workflow"
    assert events_of(db, span) == ["started", "listener_started", "listener_started", "listener_finished",
                                   "finishing", "listener_finished", "finished"]
    assert (start, end) == first_and_last_ns(run / "000" / "monitoring_router.log")


def test_a_logging_format_no_definition_reads_warns_and_the_rest_converts(tmp_path):
    """parsl.log rewritten into a made-up format ('[INFO] 2026-11-21 19:59:05 message'): one warning naming
    the file, and every other source still converts."""
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    log = run / "000" / "parsl.log"
    out = []
    for ln in log.read_text().splitlines():
        p = ln.split(" ", 8)  # created, date, time, process, thread, logger:lineno, func, LEVEL:, message
        out.append(f"[{p[7].rstrip(':')}] {p[1]} {p[2]} {p[8]}" if len(p) == 9 and STAMP.match(ln) else ln)
    log.write_text("\n".join(out) + "\n")
    summary = replay(run, tmp_path / "w.duckdb")
    warned = [w for w in summary.warnings if "000/parsl.log" in w]
    assert len(warned) == 1, summary.warnings
    stats = next(s for s in summary.sources if s.source == "000/parsl.log")
    assert stats.records == 0 and stats.not_understood == len(out)
    # monitoring.db, the HTEX logs, the database manager's and the router's logs still convert
    assert summary.contexts["task"] == 31 and summary.contexts["worker_execution"] == 31
    assert summary.contexts["database_manager"] == 1 and summary.contexts["monitoring_router"] == 1
