"""Parsl features on real runs: a join_app's links to the tasks it joined and its wait for them, memo hits
without false disagreements, the reason a task failed, and the workflow span's ends (the DFK's life).

Expectations are read from the run's own files (parsl.log lines, monitoring.db rows), not written here."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, make_parsl_run

from dnpc2otel import replay

FEATURES = CORPUS / "features-2026" / "runinfo"
# text parsl.log (2022.10+ header) and parsl.jsonlog records: the epoch as written, the logger, the message
TEXT_RECORD = re.compile(r"^(?P<t>\d+\.\d+) \S+ \S+ \S+ \S+ (?P<logger>[^\s:]+):\d+ \S+ [A-Z]+: (?P<msg>.*)$")
JSON_CREATED = re.compile(r'"created": (?P<t>\d+\.\d+)')


def epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 10**9 + int(frac[:9].ljust(9, "0"))


def dfk_records(run: Path) -> list[tuple[int, str, str]]:
    """(time ns, logger, message) of every record of the run's parsl.log or parsl.jsonlog."""
    out = []
    text = run / "parsl.log"
    if text.exists():
        for line in text.read_text(errors="replace").splitlines():
            m = TEXT_RECORD.match(line)
            if m:
                out.append((epoch_ns(m["t"]), m["logger"], m["msg"]))
        return out
    for line in (run / "parsl.jsonlog").read_text().splitlines():
        rec, m = json.loads(line), JSON_CREATED.search(line)
        if m:
            out.append((epoch_ns(m["t"]), rec["name"], rec["formatted"]))
    return out


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(sql, params).fetchall()


def spans(db: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for sid, parent, ctype, cid, s, e, code, msg, attrs in rows(db, """
            SELECT span_id, parent_span_id, context_type, attributes->>'$."dnpc.context_id"',
                   start_time_unix_nano, end_time_unix_nano, status_code, status_message, attributes FROM spans"""):
        out[(ctype, cid)] = {"span_id": sid, "parent": parent, "start": s, "end": e, "status": code,
                             "message": msg, "attributes": json.loads(attrs)}
    return out


def links(db: Path, relations=("joins", "joined_by")) -> set[tuple[str, str, str]]:
    """(context, relation, linked context) of span_links, resolved through the spans on both sides."""
    marks = ", ".join("?" for _ in relations)
    return set(rows(db, f"""
        SELECT s.context_type || ':' || (s.attributes->>'$."dnpc.context_id"'), l.attributes->>'$."dnpc.relation"',
               t.context_type || ':' || (t.attributes->>'$."dnpc.context_id"')
        FROM span_links l JOIN spans s USING (trace_id, span_id)
        JOIN spans t ON t.trace_id = l.linked_trace_id AND t.span_id = l.linked_span_id
        WHERE l.attributes->>'$."dnpc.relation"' IN ({marks})""", relations))


def db_joins(run_dir: Path) -> dict[str, set[str]]:
    """monitoring.db's try.task_joins: join task → the tasks it joined."""
    with sqlite3.connect(f"file:{run_dir / 'monitoring.db'}?mode=ro", uri=True) as db:
        found = db.execute("SELECT task_id, task_joins FROM try WHERE task_joins IS NOT NULL AND task_joins <> ''")
        return {str(t): {j.strip() for j in joins.split(",") if j.strip()} for t, joins in found}


def expected_links(joins: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    out = set()
    for j, inner in joins.items():
        for i in inner:
            out |= {(f"task:{j}", "joins", f"task:{i}"), (f"task:{i}", "joined_by", f"task:{j}")}
    return out


def disagreements(db: Path) -> list[tuple]:
    return rows(db, "SELECT kind, context_type, context_id, subject, size_ms FROM disagreements")


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "out.duckdb"
    replay(FEATURES, out)
    return out


@pytest.fixture(scope="module")
def fresh_join(tmp_path_factory) -> tuple[Path, Path]:
    """A real run made now with mixed.py --join (two join_apps, one joining a task that fails)."""
    run_dir = make_parsl_run(tmp_path_factory.mktemp("join"), "--join", "--tasks", "4", workflow="mixed.py")
    out = run_dir.parent / "out.duckdb"
    replay(run_dir, out)
    return run_dir, out


# ---------------------------------------------------------------- join_app


def test_join_tasks_link_both_ways_to_what_they_joined(features):
    joins = db_joins(FEATURES)
    assert joins == {"37": {"40", "41", "42"}, "38": {"43", "44"}}  # fan_in(3) and fan_in_failing()
    assert links(features) == expected_links(joins)


@pytest.mark.parametrize("only", ["parsl.log", "monitoring.db"])
def test_each_source_alone_links_the_join(only, tmp_path):
    """parsl.log's join callbacks (futures named by their repr) and try.task_joins say the same."""
    run_dir = copy_run(FEATURES, tmp_path, without_db=only == "parsl.log")
    if only == "monitoring.db":
        (run_dir / "000" / "parsl.log").unlink()
    out = tmp_path / "out.duckdb"
    replay(run_dir, out)
    assert links(out) == expected_links(db_joins(FEATURES))
    assert {src for (src,) in rows(out, """SELECT DISTINCT attributes->>'$."dnpc.source"' FROM span_links
                                          WHERE attributes->>'$."dnpc.relation"' = 'joins'""")} == \
        {"000/parsl.log" if only == "parsl.log" else "monitoring.db"}


def test_the_join_span_is_the_wait_for_the_joined_tasks(features):
    s = spans(features)
    recs = dfk_records(FEATURES / "000")
    for join, inner in db_joins(FEATURES).items():
        task, try_, wait = s[("task", join)], s[("try", f"{join}.0")], s[("join", join)]
        assert wait["parent"] == task["span_id"]
        # the try ran the join_app's body; the wait starts when it returned (Parsl's `joining` state)
        joining = next(t for t, _, m in recs if m == f"Task {join} changing state from launched to joining")
        assert abs(wait["start"] - joining) < 1_000_000
        assert try_["end"] <= wait["start"] + 1_000_000
        # … and lasts until the last joined task is done, to the join task's end
        assert wait["end"] == task["end"]
        assert wait["end"] >= max(s[("task", i)]["end"] for i in inner)
        events = rows(features, """
            SELECT e.attributes->>'$."parsl.join.task_id"', e.time_unix_nano FROM span_events e
            JOIN spans w USING (trace_id, span_id) WHERE w.span_id = ? AND e.name = 'inner_done'""",
                      (wait["span_id"],))
        assert {i for i, _ in events} == inner
        assert all(wait["start"] <= t <= wait["end"] for _, t in events)


def test_a_failed_join_says_join_error_and_keeps_the_detail(features):
    s = spans(features)
    with sqlite3.connect(f"file:{FEATURES / 'monitoring.db'}?mode=ro", uri=True) as db:
        (history,) = db.execute("SELECT task_fail_history FROM try WHERE task_id = 38 AND try_id = 0").fetchone()
    assert history.startswith("JoinError([")
    for key in [("task", "38"), ("try", "38.0"), ("join", "38")]:
        assert (s[key]["status"], s[key]["message"]) == ("ERROR", "JoinError"), key
    assert s[("try", "38.0")]["attributes"]["parsl.try.fail_history"] == history
    assert s[("task", "37")]["status"] == "UNSET" and s[("join", "37")]["status"] == "UNSET"
    # no status message anywhere is an exception's repr
    assert not [k for k, v in s.items() if v["message"] and "(" in v["message"]]


def test_fresh_join_run(fresh_join):
    run_dir, out = fresh_join
    joins = db_joins(run_dir)
    assert len(joins) == 2 and sorted(len(v) for v in joins.values()) == [2, 3]
    assert links(out) == expected_links(joins)
    s = spans(out)
    failed = [j for j in joins if s[("task", j)]["status"] == "ERROR"]
    assert len(failed) == 1
    assert s[("task", failed[0])]["message"] == "JoinError"
    assert s[("join", failed[0])]["message"] == "JoinError"
    for j in joins:
        assert s[("join", j)]["parent"] == s[("task", j)]["span_id"]
    check_workflow_ends(run_dir / "000", s)
    assert not [d for d in disagreements(out) if d[0] in ("repeated_event", "impossible_order")]


# ---------------------------------------------------------------- why a task failed


def failing_tries(run: Path) -> dict[str, tuple[str, str]]:
    """From parsl.log: task → (its try that failed last, that try's exception type), for the tasks that
    failed after their retries or for a failed dependency."""
    last: dict[str, tuple[str, str]] = {}
    failed = set()
    for _, _, msg in dfk_records(run):
        m = re.match(r"Task (\d+) try (\d+) failed with exception of type (\S+)$", msg)
        if m:
            last[m[1]] = (f"{m[1]}.{m[2]}", m[3])
        # (a failed dependency is logged before the try's failure line as well as after it)
        m = re.match(r"Task (\d+) failed (?:after \d+ retry attempts|due to dependency failure)", msg)
        if m:
            failed.add(m[1])
    return {task: last[task] for task in failed}


@pytest.mark.parametrize("name", ["features-2026", "htex-2026", "mixkill-2026"])
def test_a_failed_task_carries_the_exception_of_its_failing_try(name, tmp_path):
    out = tmp_path / "out.duckdb"
    replay(CORPUS / name / "runinfo", out)
    s = spans(out)
    expected = failing_tries(CORPUS / name / "runinfo" / "000")
    assert expected
    for task, (try_id, exc) in expected.items():
        span = s[("task", task)]
        assert (span["status"], span["message"]) == ("ERROR", exc), task
        assert span["attributes"]["dnpc.status.from"] == f"try:{try_id}"
        assert span["attributes"]["exception.type"] == exc
    assert all(v["message"] for (t, _), v in s.items() if t == "task" and v["status"] == "ERROR")


def test_without_parsl_log_the_reason_comes_from_monitoring_db(tmp_path):
    """nolog-2026 has no parsl.log: the failed tries' task_fail_history give their tasks' reasons."""
    run_dir = CORPUS / "nolog-2026" / "runinfo"
    with sqlite3.connect(f"file:{run_dir / 'monitoring.db'}?mode=ro", uri=True) as db:
        last = dict(db.execute("""
            SELECT t.task_id, t.task_fail_history FROM try t
            WHERE t.task_fail_history <> ''
              AND t.try_id = (SELECT max(u.try_id) FROM try u WHERE u.run_id = t.run_id AND u.task_id = t.task_id)
            """).fetchall())
    assert last
    out = tmp_path / "out.duckdb"
    replay(run_dir, out)
    s = spans(out)
    for task, history in last.items():
        exc = re.match(r"\s*([A-Za-z_][\w.]*)", history)[1]
        assert (s[("task", str(task))]["status"], s[("task", str(task))]["message"]) == ("ERROR", exc)


# ---------------------------------------------------------------- the workflow span: the DFK's life


def check_workflow_ends(run: Path, s: dict) -> None:
    """The workflow span starts at the DFK's first line and ends at its last (≤ 2025 an atexit hook may log
    once more at interpreter exit, after the DFK was cleaned up: not part of its life)."""
    dfk = [t for t, logger, msg in dfk_records(run)
           if logger == "parsl.dataflow.dflow" and not msg.startswith("python process is exiting")]
    wf = s[("workflow", "")]
    assert (wf["start"], wf["end"]) == (min(dfk), max(dfk))
    assert wf["attributes"]["dnpc.bounds.source"] == "parsl_dfk"


@pytest.mark.parametrize("name", ["features-2026", "htex-2026", "htex-json-2026", "wq-2026", "filelogging-2026",
                                  "htex-2023"])
def test_the_workflow_span_is_the_dfk_life(name, tmp_path):
    out = tmp_path / "out.duckdb"
    replay(CORPUS / name / "runinfo", out)
    check_workflow_ends(CORPUS / name / "runinfo" / "000", spans(out))
    # monitoring.db's time_began and time_completed lie inside it, and agree with the log's twin lines
    assert not [d for d in disagreements(out) if d[1] == "workflow"]


def test_a_time_completed_the_logs_contradict_is_a_disagreement(features, tmp_path):
    run_dir = tmp_path / "runinfo"
    shutil.copytree(FEATURES, run_dir)
    with sqlite3.connect(run_dir / "monitoring.db") as db:
        db.execute("UPDATE workflow SET time_completed = strftime('%Y-%m-%d %H:%M:%f', time_completed, '-5 seconds')")
    out = tmp_path / "out.duckdb"
    replay(run_dir, out)
    assert not [d for d in disagreements(features) if d[1] == "workflow"]  # the run as it was
    found = {(kind, subject): size for kind, ctype, _, subject, size in disagreements(out) if ctype == "workflow"}
    # the log's 'Terminated executors' (time_completed is stamped right after it) is 5 s later
    assert 4999 < found[("same_event_apart", "completed")] < 5001
    # and the database now has the workflow complete before the DFK began its cleanup
    assert found[("impossible_order", "cleanup_initiated (parsl_dfk) after completed (monitoring_db)")] > 0
    # the span still follows the DFK's own lines
    assert spans(out)[("workflow", "")]["end"] == spans(features)[("workflow", "")]["end"]


# ---------------------------------------------------------------- memo hits


def test_memo_hits_make_no_false_disagreement(fresh_threads_chicago, tmp_path):
    hits = sum(1 for _, _, m in dfk_records(fresh_threads_chicago / "000")
               if re.fullmatch(r"Task \d+ using result from cache", m))
    assert hits >= 1
    out = tmp_path / "out.duckdb"
    replay(fresh_threads_chicago, out)
    memo = [v for (t, _), v in spans(out).items() if t == "try" and v["attributes"].get("parsl.try.memo") == "hit"]
    assert len(memo) == hits
    assert all(v["attributes"]["parsl.try.final_state"] == "memo_done" for v in memo)
    assert not [d for d in disagreements(out) if d[0] in ("repeated_event", "impossible_order")]


@pytest.mark.parametrize("name", ["features-2026", "mixkill-2026"])
def test_corpus_runs_with_cached_apps_have_no_order_or_repeat_disagreement(name, tmp_path):
    out = tmp_path / "out.duckdb"
    replay(CORPUS / name / "runinfo", out)
    assert rows(out, "SELECT count(*) FROM spans WHERE attributes->>'$.\"parsl.try.memo\"' = 'miss'")[0][0] >= 3
    assert not [d for d in disagreements(out) if d[0] in ("repeated_event", "impossible_order")]
