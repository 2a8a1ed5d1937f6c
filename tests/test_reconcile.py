"""Many sources, one truth: merged spans keep every source's events, bounds follow a stated preference
with the spread recorded, and disagreements are listed with their sizes instead of being hidden."""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap

import duckdb
import pytest
from conftest import CORPUS, copy_run

from dnpc2otel import replay


@pytest.fixture
def htex_copy(tmp_path):
    return copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)


def rows(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(sql, params).fetchall()


def test_merged_spans_carry_every_sources_events(htex_copy, tmp_path):
    out = tmp_path / "m.duckdb"
    replay(htex_copy, out)
    # every try has events from both the DFK log and the database, each with its provenance
    per_try = rows(out, """
        SELECT s.span_id, list_sort(list(DISTINCT e.attributes->>'$."dnpc.converter"')),
               bool_and(e.attributes->>'$."dnpc.source"' IS NOT NULL AND e.attributes->>'$."dnpc.line"' IS NOT NULL)
        FROM spans s JOIN span_events e USING (trace_id, span_id)
        WHERE s.context_type = 'try' GROUP BY s.span_id""")
    assert len(per_try) == 33
    launched = [r for r in per_try if r[1] == ["monitoring_db", "parsl_dfk"]]
    assert len(launched) == 33 and all(r[2] for r in per_try)
    # the span follows the most trusted source and says so, with the others' spread
    attrs = [json.loads(a) for (a,) in rows(out, "SELECT attributes FROM spans WHERE context_type = 'try'")]
    assert all(a["dnpc.bounds.source"] == "monitoring_db" for a in attrs)
    assert all(a["dnpc.sources"] == ["monitoring_db", "parsl_dfk"] for a in attrs)
    assert all(0 <= a["dnpc.start.spread_ms"] < 50 and 0 <= a["dnpc.end.spread_ms"] < 50 for a in attrs)


def test_same_event_at_different_times_is_listed_with_its_size(htex_copy, tmp_path):
    db = sqlite3.connect(htex_copy / "monitoring.db")
    # the database says task 3's exec_done happened 250 ms later than it did
    db.execute("""UPDATE status SET timestamp = strftime('%Y-%m-%d %H:%M:%f', timestamp, '+0.250 seconds')
                  WHERE task_id = 3 AND task_status_name = 'exec_done'""")
    db.commit()
    db.close()
    out = tmp_path / "d.duckdb"
    summary = replay(htex_copy, out)
    found = rows(out, """SELECT context_type, context_id, subject, size_ms FROM disagreements
                         WHERE kind = 'same_event_apart' AND size_ms > 100 ORDER BY context_type""")
    assert [(t, i, s) for t, i, s, _ in found] == [("task", "3", "exec_done"), ("try", "3.0", "exec_done")]
    assert all(249 < ms < 252 for *_, ms in found)
    assert summary.disagreements["same_event_apart"][1] > 249
    # the span itself is bounded by the trusted try row, not stretched by the odd status row
    (end_minus_returned,) = rows(out, """
        SELECT (s.end_time_unix_nano - o.time_unix_nano) / 1e6 FROM spans s JOIN observations o USING (span_id)
        WHERE s.context_type = 'try' AND s.attributes->>'$."dnpc.context_id"' = '3.0' AND o.event = 'returned'""")[0]
    assert end_minus_returned == 0


def test_running_before_launched_is_an_impossible_order(htex_copy, tmp_path):
    db = sqlite3.connect(htex_copy / "monitoring.db")
    # the known race of fast tasks: the worker's 'running' stamped before the DFK's launch
    db.execute("""UPDATE status SET timestamp = strftime('%Y-%m-%d %H:%M:%f',
                      (SELECT task_try_time_launched FROM try WHERE task_id = 5 AND try_id = 0), '-0.002 seconds')
                  WHERE task_id = 5 AND task_status_name = 'running'""")
    db.execute("""UPDATE try SET task_try_time_running = (SELECT timestamp FROM status WHERE task_id = 5
                  AND task_status_name = 'running') WHERE task_id = 5 AND try_id = 0""")
    db.commit()
    db.close()
    out = tmp_path / "o.duckdb"
    replay(htex_copy, out)
    found = rows(out, """SELECT context_id, subject, size_ms FROM disagreements
                         WHERE kind = 'impossible_order' AND context_type = 'try'""")
    assert [r[0] for r in found] == ["5.0"]
    assert found[0][1].startswith("launch") and "after running" in found[0][1]
    assert 1.0 < found[0][2] < 50  # 2 ms, less what strftime truncates to milliseconds


def test_killed_run_has_incomplete_spans(htex_copy, tmp_path):
    """A run killed mid-way: no cleanup, tasks without a final state; spans end at their last
    observation and are marked incomplete."""
    (htex_copy / "monitoring.db").unlink()
    log = htex_copy / "000" / "parsl.log"
    lines = log.read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if "Task 10 changing state from launched to exec_done" in ln)
    log.write_text("".join(lines[:cut]))
    out = tmp_path / "k.duckdb"
    summary = replay(htex_copy, out)
    incomplete = dict(rows(out, """SELECT context_type, count(*) FROM spans
                                   WHERE attributes->>'$."dnpc.incomplete"' = 'true' GROUP BY 1"""))
    kept = "".join(lines[:cut])
    submitted = set(re.findall(r"Task (\d+) submitted for App", kept))
    finished = set(re.findall(r"Task (\d+) changing state from \w+ to (?:exec_done|failed|dep_fail|memo_done)", kept))
    launched = set(re.findall(r"Parsl task (\d+ try \d+) launched", kept))
    ended = set(re.findall(r"Task (\d+ try \d+) failed", kept)) | {
        f"{t} try 0" for t in re.findall(r"Task (\d+) changing state from launched to exec_done", kept)}
    assert incomplete == {"workflow": 1, "task": len(submitted - finished), "try": len(launched - ended)}
    assert incomplete["task"] > 15
    assert summary.disagreements["incomplete"][0] == sum(incomplete.values())
    # an incomplete task or try ends at its last observation by any source, or at its last child's end when
    # that is later (nesting: it was alive while they were), never before it starts (the workflow covers its
    # children, so it ends with the last of them)
    bad = rows(out, """SELECT count(*) FROM spans s WHERE end_time_unix_nano < start_time_unix_nano
                       OR attributes->>'$."dnpc.incomplete"' = 'true' AND context_type IN ('task', 'try')
                          AND end_time_unix_nano <> greatest(
                              (SELECT max(time_unix_nano) FROM observations o WHERE o.span_id = s.span_id AND o.bounds),
                              (SELECT max(c.end_time_unix_nano) FROM spans c WHERE c.parent_span_id = s.span_id))""")
    assert bad == [(0,)]


CLAIMS = textwrap.dedent(r"""
    name = "claims"
    [contexts.thing]
    parents = ["task"]
    [[formats]]
    name = "text"
    kind = "lines"
    files = '(?P<rundir>[^/]+)/claims\.log'
    record = '^(?P<created>\d+\.\d+) (?P<message>.*)$'
    time = "created"
    [[rules]]
    name = "claim"
    match = '^thing (?P<x>\S+) belongs to task (?P<t>\d+)$'
    emit = [{ context = "thing:{x}", event = "claimed", parent = "task:{t}" }]
    samples = [{ release = "test", line = "1795291150.0 thing a belongs to task 1", expect = 1 }]
""")


def test_a_context_claimed_by_two_parents_gets_neither(htex_copy, tmp_path):
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "claims.toml").write_text(CLAIMS)
    (htex_copy / "000" / "claims.log").write_text(
        "1795291150.0 thing a belongs to task 1\n1795291150.1 thing a belongs to task 2\n"
        "1795291150.2 thing b belongs to task 3\n"
    )
    out = tmp_path / "c.duckdb"
    replay(htex_copy, out, converter_dirs=[defs])
    spans = {r[0]: r[1:] for r in rows(out, """
        SELECT s.attributes->>'$."dnpc.context_id"', p.context_type, s.attributes->>'$."dnpc.orphan"'
        FROM spans s JOIN spans p ON p.span_id = s.parent_span_id WHERE s.context_type = 'thing'""")}
    assert spans["b"] == ("task", None)
    assert spans["a"] == ("workflow", "true")
    conflicts = rows(out, "SELECT context_id, detail FROM disagreements WHERE kind = 'parent_conflict'")
    assert conflicts and conflicts[0][0] == "a"
    assert json.loads(conflicts[0][1])["claimed_by"] == ["task:1", "task:2"]
    links = rows(out, """SELECT count(*) FROM span_links l JOIN spans s USING (span_id) WHERE s.context_type = 'thing'
                         AND l.attributes->>'$."dnpc.relation"' = 'conflicting_parent'""")
    assert links == [(2,)]


def test_assumed_one_to_one_bindings_are_checked(htex_copy, tmp_path):
    """A try launched twice (two executor ids) and a block with two job ids are reported."""
    log = htex_copy / "000" / "parsl.log"
    lines = log.read_text().splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if "Parsl task 3 try 0 launched on executor worker_pool" in ln)
    lines.insert(i + 1, re.sub(r"with executor id \d+", "with executor id 99", lines[i]))
    log.write_text("".join(lines))
    db = sqlite3.connect(htex_copy / "monitoring.db")
    db.execute("UPDATE block SET job_id = '4242' WHERE rowid = (SELECT max(rowid) FROM block)")
    db.commit()
    db.close()
    out = tmp_path / "b.duckdb"
    summary = replay(htex_copy, out)
    found = {(k, t, i): (s, json.loads(d)) for k, t, i, s, d in rows(out, """
        SELECT kind, context_type, context_id, subject, detail FROM disagreements
        WHERE kind IN ('repeated_event', 'conflicting_values', 'too_many_children')""")}
    assert found[("repeated_event", "try", "3.0")][0] == "launched (parsl_dfk)"
    subject, detail = found[("too_many_children", "try", "3.0")]
    assert subject == "executor_task"
    assert detail["children"] == ["executor_task:worker_pool/4", "executor_task:worker_pool/99"]
    subject, detail = found[("conflicting_values", "block", "worker_pool/0")]
    assert subject == "parsl.block.job_id" and len(detail["values"]) == 2 and '"4242"' in detail["values"]
    assert len(found) == 3 and summary.disagreements["too_many_children"][0] == 1


@pytest.mark.parametrize("name", ["htex-2026", "htex-json-2026", "htex-2023", "wq-2026"])
def test_complete_runs_from_logs_alone_have_nothing_incomplete(name, tmp_path):
    """A run that ended normally is complete from parsl.log alone (recent releases log no 'cleanup
    complete' line: the last logged cleanup step stands for it)."""
    logs = copy_run(CORPUS / name / "runinfo", tmp_path, without_db=True)
    summary = replay(logs, tmp_path / "complete.duckdb")
    assert "incomplete" not in summary.disagreements
