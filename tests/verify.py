"""Checks of a replayed DuckDB against the run's own monitoring.db (the issue's 'done when' list).

Structure (one span per task and try, parents, links, statuses) is checked against monitoring.db whatever
the replay read. Times are checked exactly against the source that timed the replay, never across sources
(two processes stamp the same moment a few ms apart on a busy machine; that is what the `disagreements`
table reports): a replay that read monitoring.db against its try rows, a replay of the logs alone against
the `created` stamps of the parsl.log / parsl.jsonlog lines that bound each try, read here independently.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

NS = 1_000_000_000
DB_ROUNDING_NS = 1_000  # monitoring.db keeps its times as text to the microsecond
TIME_SOURCES = ("monitoring.db", "parsl.log")

# The parsl.log lines that bound a try (converters/parsl_dfk.toml: the rules emitting a bounding event of
# context try:…). A try starts at the first of its lines and ends at the last. Messages as Parsl writes
# them: group 1 is the task id, group 2 (when the line names it) the try id.
TRY_BOUNDING_LINES = {
    "try_memo_check": re.compile(r"^Task (\d+) (?:will not be memoized|has memoization hash \S+)$"),
    "task_memo_check_hit": re.compile(r"^Task (\d+) using result from cache$"),
    "try_launched": re.compile(r"^Parsl task (\d+) try (\d+) launched on executor \S+"),
    "try_failed": re.compile(r"^Task (\d+) try (\d+) failed\b"),
    "task_state": re.compile(r"^Task (\d+) (?:changing state from \w+ to \w+|(?:completed|failed) \(\w+ -> \w+\))$"),
    "task_memo": re.compile(r"^Reusing cached result for task (\d+)$"),
    # a dependency-failed try starts at the DFK's verdict (its only line before the failure itself)
    "try_dependency_failed": re.compile(r"^Task (\d+) failed due to dependency failure$"),
}
_TEXT_RECORD = re.compile(r"^(\d+\.\d+) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*? [A-Z]+: (.*)$")


def db_rows(monitoring_db: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(f"file:{monitoring_db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def local_to_ns(text: str, offset_s: int) -> int:
    dt = datetime.fromisoformat(text)
    epoch = datetime(1970, 1, 1)
    return (dt - epoch) // timedelta(microseconds=1) * 1000 - offset_s * NS


def spans_by(con: duckdb.DuckDBPyConnection, ctype: str) -> dict[tuple, dict]:
    cols = ["trace_id", "span_id", "parent_span_id", "name", "start", "end", "status_code", "status_message",
            "task_id", "try_id", "run_id", "bounds_source"]
    rows = con.execute(
        """SELECT trace_id, span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, status_code,
                  status_message, CAST(json_extract(attributes, '$."parsl.task.id"') AS BIGINT),
                  CAST(json_extract(attributes, '$."parsl.try.id"') AS BIGINT),
                  json_extract_string(attributes, '$."parsl.run_id"'),
                  json_extract_string(attributes, '$."dnpc.bounds.source"')
           FROM spans WHERE context_type = ?""",
        [ctype],
    ).fetchall()
    out = {}
    for r in rows:
        d = dict(zip(cols, r, strict=True))
        key = (d["run_id"], d["task_id"]) if ctype == "task" else (d["run_id"], d["task_id"], d["try_id"])
        out[key] = d
    return out


def log_lines(path: Path) -> dict[int, tuple[int, str]]:
    """line number (1-based) → (`created` in epoch ns, message) of every record of a parsl.log (text) or
    parsl.jsonlog, read without the converters; the epoch is taken from its decimal text, exactly."""
    out = {}
    # lines end at '\n' only (a stray '\r' or other separator inside a line does not end it)
    for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        line = raw.decode("utf-8", errors="replace")
        if path.suffix == ".jsonlog":
            try:
                record = json.loads(line, parse_float=Decimal)
            except ValueError:
                continue
            if isinstance(record, dict) and "created" in record:
                out[n] = (int(Decimal(record["created"]) * NS), record.get("formatted") or "")
        elif m := _TEXT_RECORD.match(line):
            out[n] = (int(Decimal(m.group(1)) * NS), m.group(2))
    return out


def _replay_facts(con: duckdb.DuckDBPyConnection) -> tuple[bool, dict[str, Path]]:
    """Did the replay read times from monitoring.db; the run_dir of each source file it read."""
    rows = con.execute("SELECT root, source, converter, observations FROM sources").fetchall()
    had_db = any(conv == "monitoring_db" and (n or 0) > 0 for _, _, conv, n in rows)
    return had_db, {source: Path(root) for root, source, _, _ in rows}


def _bounding_observations(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """span_id of each try → the observations that may bound it: (event, time, source, line, rule, converter)."""
    out: dict[str, list[tuple]] = {}
    for span_id, *obs in con.execute(
        """SELECT o.span_id, o.event, o.time_unix_nano, o.source, o.line, o.rule, o.converter
           FROM observations o JOIN spans s USING (trace_id, span_id)
           WHERE s.context_type = 'try' AND o.bounds AND o.event IS NOT NULL AND o.time_unix_nano IS NOT NULL
           ORDER BY ALL"""
    ).fetchall():
        out.setdefault(span_id, []).append(tuple(obs))
    return out


def _check_try_times_against_log(key: tuple, span: dict, observations: list[tuple], roots: dict[str, Path],
                                 logs: dict[str, dict[int, tuple[int, str]]]) -> None:
    """The try span is bounded by its parsl.log lines: start and end are the first and last of their
    `created` stamps, each observation carries the stamp of the very line it cites, and that line is one of
    the lines that bound a try, about this task (and try, where it says)."""
    _run, task, try_id = key
    times = []
    for event, t, source, line, rule, converter in observations:
        assert converter == "parsl_dfk" and re.fullmatch(r"[^/]+/parsl\.(?:json)?log", source), \
            (key, "bounded by", converter, source)
        if source not in logs:
            logs[source] = log_lines(roots[source] / source)
        assert line in logs[source], (key, event, f"{source}:{line} is not a log record")
        created, message = logs[source][line]
        assert t == created, (key, event, f"{source}:{line}", t, created)
        assert rule in TRY_BOUNDING_LINES, (key, event, rule, "bounds a try but is not a try-bounding rule")
        m = TRY_BOUNDING_LINES[rule].match(message)
        assert m, (key, event, f"{source}:{line}", message)
        assert int(m.group(1)) == task, (key, f"{source}:{line}", message)
        if m.re.groups >= 2:
            assert int(m.group(2)) == try_id, (key, f"{source}:{line}", message)
        times.append(t)
    assert span["start"] == min(times), (key, "start", span["start"], min(times))
    assert span["end"] == max(times), (key, "end", span["end"], max(times))
    # the try's own launch line, found here by its text, is among the lines that bound it
    cited = {(source, line) for _, _, source, line, _, _ in observations}
    for source in {source for _, _, source, *_ in observations}:
        launched = [n for n, (_, msg) in logs[source].items() if _launch_of(msg) == (task, try_id)]
        assert all((source, n) in cited for n in launched), (key, "launch line not among its bounds", launched)


def _launch_of(message: str) -> tuple[int, int] | None:
    m = TRY_BOUNDING_LINES["try_launched"].match(message)
    return (int(m[1]), int(m[2])) if m else None


def check_replay_against_monitoring(duck: Path, monitoring_db: Path, times: str | None = None) -> dict:
    """Assert the issue's criteria; returns counts for further checks.

    `times` names the source the try times are checked against, exactly: "monitoring.db" (the replay read
    it: spans against its try rows, to its µs rounding) or "parsl.log" (a replay of the logs alone: spans
    against the `created` stamps of the DFK log lines that bound them). None: whichever the replay read.
    Everything else is checked against monitoring_db.
    """
    con = duckdb.connect(str(duck), read_only=True)
    try:
        had_db, roots = _replay_facts(con)
        if times is None:
            times = "monitoring.db" if had_db else "parsl.log"
        assert times in TIME_SOURCES, times
        assert had_db == (times == "monitoring.db"), f"times checked against {times}, but the replay " + (
            "read monitoring.db" if had_db else "had no monitoring.db")
        runs = {r[0]: r[1] for r in con.execute("SELECT run_id, utc_offset_seconds FROM runs").fetchall()}
        tasks = spans_by(con, "task")
        tries = spans_by(con, "try")
        bounding = _bounding_observations(con)
        workflows = {r[0]: r[1] for r in con.execute(
            """SELECT json_extract_string(attributes, '$."parsl.run_id"'), span_id FROM spans
               WHERE context_type = 'workflow'""").fetchall()}
        links = {(r[0], r[1]) for r in con.execute(
            """SELECT span_id, linked_span_id FROM span_links
               WHERE json_extract_string(attributes, '$."dnpc.relation"') = 'depends_on'""").fetchall()}
    finally:
        con.close()

    db_tasks = db_rows(monitoring_db, "SELECT run_id, task_id, task_depends FROM task")
    db_tries = db_rows(
        monitoring_db,
        """SELECT run_id, task_id, try_id, task_try_time_launched, task_try_time_returned, task_fail_history
           FROM try""",
    )
    db_tasks = [t for t in db_tasks if t[0] in runs]
    db_tries = [t for t in db_tries if t[0] in runs]
    assert db_tasks, "the database has no task of the replayed runs"

    # one task span per task row, one try span per try row
    assert {(r, t) for r, t, _ in db_tasks} == set(tasks)
    assert {(r, t, y) for r, t, y, *_ in db_tries} == set(tries)

    for (run, task), span in tasks.items():
        assert span["parent_span_id"] == workflows[run], f"task {task} is not a child of its workflow"
    for (run, task, _try), span in tries.items():
        assert span["parent_span_id"] == tasks[(run, task)]["span_id"], f"try {task}.{_try} not under its task"

    # try start/end: exactly the times of the source that timed the replay
    timed = 0
    logs: dict[str, dict[int, tuple[int, str]]] = {}
    for run, task, try_id, launched, returned, fail_history in db_tries:
        span = tries[(run, task, try_id)]
        if times == "monitoring.db":
            if launched:
                assert span["bounds_source"] == "monitoring_db", (task, try_id, span["bounds_source"])
                # the DB's naive local times, after the replay's UTC offset
                assert abs(span["start"] - local_to_ns(launched, runs[run])) < DB_ROUNDING_NS, (task, try_id, "start")
                timed += 1
            if returned:
                assert abs(span["end"] - local_to_ns(returned, runs[run])) < DB_ROUNDING_NS, (task, try_id, "end")
        else:
            observations = bounding.get(span["span_id"], [])
            # a try the database saw launched was logged too
            assert observations or not launched, (task, try_id, "launched, but no parsl.log line bounds it")
            if observations:
                assert span["bounds_source"] == "parsl_dfk", (task, try_id, span["bounds_source"])
                _check_try_times_against_log((run, task, try_id), span, observations, roots, logs)
                timed += 1
        if fail_history:
            assert span["status_code"] == "ERROR", f"failed try {task}.{try_id} not marked"
        else:
            assert span["status_code"] != "ERROR", f"try {task}.{try_id} wrongly marked failed"

    # dependency links from the dependent task to each dependency
    n_deps = 0
    for run, task, depends in db_tasks:
        for dep in filter(None, (depends or "").split(",")):
            assert (tasks[(run, task)]["span_id"], tasks[(run, int(dep))]["span_id"]) in links, (task, dep)
            n_deps += 1

    # tasks that failed carry status ERROR
    failed = db_rows(
        monitoring_db,
        "SELECT DISTINCT run_id, task_id FROM status WHERE task_status_name IN ('failed', 'dep_fail')",
    )
    for run, task in failed:
        if run in runs:
            assert tasks[(run, task)]["status_code"] == "ERROR", f"failed task {task} not marked"
    return {"tasks": len(tasks), "tries": len(tries), "timed_tries": timed, "dependencies": n_deps,
            "failed_tasks": len(failed), "times": times}
