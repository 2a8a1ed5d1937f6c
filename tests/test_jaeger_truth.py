"""What Jaeger shows is true: every bundled corpus run, replayed into a real Jaeger v2 and read back.

Jaeger flags what it cannot believe: a child outside its parent is taken for clock skew ("clock skew
adjustment disabled; not applying calculated delta", in both query APIs), a span whose end is not after its
start is rewritten ("Negative duration detected, sanitizing end timestamp"). Every corpus run must come back
with no warning, every process (OTLP resource) with its host, every child inside its parent; and the nesting
policy (reconcile/nesting.py) and the processes (reconcile/spans.py) are checked on the real runs that need
them.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, corpus_runs

from dnpc2otel import replay
from dnpc2otel.export.otlp import OtlpConfig, export
from dnpc2otel.reconcile.nesting import TOLERANCE_MS

MS = 1_000_000


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict[str, Path]:
    """name → DuckDB file of each corpus run (replayed once for the module)."""
    out = tmp_path_factory.mktemp("truth")
    dbs = {}
    for run in corpus_runs():
        dbs[run.parent.name] = out / f"{run.parent.name}.duckdb"
        replay(run, dbs[run.parent.name])
    return dbs


def rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def spans_of(db: Path) -> dict[tuple[str, str], dict]:
    """(context_type, context_id) → span row, attributes parsed."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("SELECT * FROM spans")
        names = [d[0] for d in cur.description]
        for r in cur.fetchall():
            s = dict(zip(names, r, strict=True))
            s["attributes"] = json.loads(s["attributes"])
            out[(s["context_type"], s["attributes"]["dnpc.context_id"])] = s
    return out


def events_of(db: Path, span_id: str) -> dict[str, int]:
    return dict(rows(db, "SELECT name, max(time_unix_nano) FROM span_events WHERE span_id = ? GROUP BY name",
                     [span_id]))


# ---------------------------------------------------------------------------------------------- in Jaeger


@pytest.mark.slow
def test_every_corpus_run_in_jaeger_has_no_warning_a_host_per_process_and_children_inside(jaeger, replayed):
    jaeger.restart()  # empty memory storage
    checked = 0
    for name, db in replayed.items():
        export(db, OtlpConfig.from_env(jaeger.otlp_http_endpoint, "http/protobuf"))
        for (tid,) in rows(db, "SELECT trace_id FROM runs"):
            (n,) = rows(db, "SELECT count(*) FROM spans WHERE trace_id = ?", [tid])[0]
            v3 = {s["span_id"]: s for s in jaeger.wait_for_spans(tid, n)}
            legacy = jaeger.trace_legacy(tid)
            assert len(legacy["spans"]) == len(v3) == n, name

            # no warnings: the UI's API and the OTLP one (where they are the attribute @jaeger@warnings)
            warned = [(s["operationName"], w) for s in legacy["spans"] for w in s.get("warnings") or []]
            warned += [(s["name"], w) for s in v3.values() for w in s["attributes"].get("@jaeger@warnings") or []]
            assert warned == [], f"{name}: {len(warned)} warnings, e.g. {warned[:3]}"

            # a host on every process (Jaeger's processes are the OTLP resources), and a deterministic instance
            for pid, process in legacy["processes"].items():
                tags = {t["key"]: t["value"] for t in process.get("tags") or []}
                assert tags.get("host.name"), f"{name}: process {pid} {process['serviceName']} has no host.name"
                assert tags.get("service.instance.id"), tags
            for s in v3.values():
                assert s["resource"].get("host.name") and s["resource"].get("service.instance.id"), (name, s["name"])

            # children inside parents, nothing without a duration
            for s in v3.values():
                assert s["end_ns"] > s["start_ns"], (name, s["name"])
                parent = v3.get(s["parent_span_id"])
                if parent:
                    assert parent["start_ns"] <= s["start_ns"] and s["end_ns"] <= parent["end_ns"], (
                        f"{name}: {s['name']} {s['attributes'].get('dnpc.context_id')} outside {parent['name']}")
            checked += 1
    assert checked == len(corpus_runs())


@pytest.mark.slow
def test_processes_in_jaeger_are_the_dfk_managers_and_workers_with_their_facts(jaeger, replayed):
    """The resources say which process made a span: the DFK's (workflow, tasks, tries), each manager's, each
    worker's (its executions too), with the host, pid and Parsl version the sources give."""
    jaeger.restart()
    db = replayed["htex-2026"]
    export(db, OtlpConfig.from_env(jaeger.otlp_grpc_endpoint, "grpc"))
    ((tid, run_id),) = rows(db, "SELECT trace_id, run_id FROM runs")
    (n,) = rows(db, "SELECT count(*) FROM spans")[0]
    got = jaeger.wait_for_spans(tid, n)
    by_type: dict[str, set[str]] = {}
    resources = {}
    for s in got:
        inst = s["resource"]["service.instance.id"]
        by_type.setdefault(s["attributes"]["dnpc.context_type"], set()).add(inst)
        resources[inst] = s["resource"]
    dfk = f"{run_id}/workflow"
    assert by_type["workflow"] == by_type["task"] == by_type["try"] == by_type["executor_task"] == {dfk}
    # the DFK's facts: parsl.log's pid and version, monitoring.db's host ('Starting DataFlowKernel' record)
    assert resources[dfk]["process.pid"] == 1736 and resources[dfk]["service.version"] == "2026.10.26"
    assert resources[dfk]["host.name"] == "vm"
    (manager,) = by_type["manager"]
    assert manager == f"{run_id}/manager/fd83ca48a1c7"
    assert resources[manager]["process.pid"] == 1768 and resources[manager]["service.version"] == "2026.10.26"
    workers = by_type["worker"]
    assert workers == {f"{run_id}/worker/fd83ca48a1c7/0", f"{run_id}/worker/fd83ca48a1c7/1"}
    assert by_type["worker_execution"] == workers  # an execution is its worker's, not the DFK's
    assert {resources[w]["process.pid"] for w in workers} == {1780, 1781}  # HTEX-Worker-0-1780, …-1-1781
    # a worker runs on its manager's host, in its installation
    assert all(resources[w]["host.name"] == "vm" and resources[w]["service.version"] == "2026.10.26" for w in workers)
    # a try keeps its own host.name (where it ran, from monitoring.db) as a span attribute
    ran = [s["attributes"]["host.name"] for s in got if s["name"] == "try" and "host.name" in s["attributes"]]
    assert len(ran) >= 30 and set(ran) == {"vm"}


# ------------------------------------------------------------------------------- the policies on real runs


def test_within_the_tolerance_the_better_attested_bound_stands(replayed):
    """htex-2026: a worker logs 'All processing finished' after it sent the result the DFK already recorded,
    so an executor task covering its execution ended 0.1-1.2 ms after its try (and one failing by parsl.log's
    failure line, logged after monitoring.db's task_try_time_returned). The try, timed by monitoring.db, keeps
    its times; the executor task (and its execution) is trimmed to it, by the amount recorded on it."""
    db = replayed["htex-2026"]
    s = spans_of(db)
    trimmed = [v for k, v in s.items() if k[0] == "executor_task" and "dnpc.clipped.end_ms" in v["attributes"]]
    assert len(trimmed) == 8
    by_finish = 0
    for et in trimmed:
        t = next(v for v in s.values() if v["span_id"] == et["parent_span_id"])
        assert t["attributes"]["dnpc.bounds.source"] == "monitoring_db" and "dnpc.widened.end_ms" not in t["attributes"]
        assert t["end_time_unix_nano"] == events_of(db, t["span_id"])["returned"]
        assert et["end_time_unix_nano"] == t["end_time_unix_nano"]
        (ex,) = [v for v in s.values() if v["parent_span_id"] == et["span_id"]]
        finished = events_of(db, ex["span_id"])["finished"]
        # what the executor task covered: its execution's last line, or parsl.log's failure of the try
        observed_end = max(finished, events_of(db, et["span_id"]).get("failed", 0))
        cut = observed_end - et["end_time_unix_nano"]
        assert 0 < cut <= TOLERANCE_MS * MS
        assert et["attributes"]["dnpc.clipped.end_ms"] == pytest.approx(cut / MS, abs=1e-6)
        if finished > t["end_time_unix_nano"]:  # the execution too, its last event outside it
            by_finish += 1
            assert ex["end_time_unix_nano"] == t["end_time_unix_nano"]
            assert ex["attributes"]["dnpc.clipped.end_ms"] == pytest.approx((finished - t["end_time_unix_nano"]) / MS,
                                                                            abs=1e-6)
    assert by_finish == 5
    assert rows(db, "SELECT count(*) FROM disagreements WHERE kind = 'child_outside_parent'") == [(0,)]


def test_within_the_tolerance_a_parent_as_trusted_as_its_child_is_widened(replayed, tmp_path):
    """htex-2026 with monitoring.db saying task 3's try returned 2 ms after the task did: both rows are the
    same source, so the task (the parent) is widened over its try, by 2 ms, recorded; nothing is clipped."""
    import sqlite3

    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path)
    with sqlite3.connect(run / "monitoring.db") as con:
        (task_returned,) = con.execute("SELECT task_time_returned FROM task WHERE task_id = 3").fetchone()
        con.execute("""UPDATE try SET task_try_time_returned = strftime('%Y-%m-%d %H:%M:%f', ?, '+0.002 seconds')
                       WHERE task_id = 3 AND try_id = 0""", [task_returned])
    db = tmp_path / "late-try.duckdb"
    replay(run, db)
    s = spans_of(db)
    task, try_ = s[("task", "3")], s[("try", "3.0")]
    assert try_["end_time_unix_nano"] == events_of(db, try_["span_id"])["returned"]
    assert task["end_time_unix_nano"] == try_["end_time_unix_nano"]
    assert task["attributes"]["dnpc.widened.end_ms"] == pytest.approx(2.0, abs=0.05)  # its own end: µs apart
    assert "dnpc.clipped.end_ms" not in try_["attributes"]
    assert rows(db, "SELECT count(*) FROM disagreements WHERE kind = 'child_outside_parent'") == [(0,)]


def test_an_open_parent_lasts_as_long_as_its_children(tmp_path):
    """htex-2026 with parsl.log cut mid-run and no monitoring.db (the DFK died; its workers went on): a try
    left open (no terminal line) lasts until its execution's last line, however long after, and so do its
    task and the workflow; nothing is clipped."""
    run = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path, without_db=True)
    log = run / "000" / "parsl.log"
    lines = log.read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if "Task 10 changing state from launched to exec_done" in ln)
    log.write_text("".join(lines[:cut]))
    db = tmp_path / "killed.duckdb"
    replay(run, db)
    s = spans_of(db)
    opened = [v for k, v in s.items() if k[0] == "try" and v["attributes"].get("dnpc.incomplete")]
    stretched = [t for t in opened if "dnpc.widened.end_ms" in t["attributes"]]
    assert len(stretched) >= 10
    for t in stretched:
        (et,) = [v for v in s.values() if v["parent_span_id"] == t["span_id"]]
        (ex,) = [v for v in s.values() if v["parent_span_id"] == et["span_id"]]
        assert t["end_time_unix_nano"] == et["end_time_unix_nano"] == ex["end_time_unix_nano"]
        assert ex["end_time_unix_nano"] == events_of(db, ex["span_id"])["finished"]
        task = next(v for v in s.values() if v["span_id"] == t["parent_span_id"])
        assert task["end_time_unix_nano"] >= t["end_time_unix_nano"]
    assert rows(db, "SELECT count(*) FROM disagreements WHERE kind = 'child_outside_parent'") == [(0,)]


def test_a_child_beyond_the_tolerance_is_clipped_and_recorded(replayed):
    """mixkill-2026: a task kills the only manager; the DFK fails task 37's try (BadStateException) while a
    worker goes on with it (HTEX task 36) for 3.2 s more. The try is not stretched: its executor task and
    the execution are clipped to it, recorded as child_outside_parent, their events keep their times, and
    the execution, which outlived the failure, is not made ERROR by it."""
    db = replayed["mixkill-2026"]
    s = spans_of(db)
    try_ = s[("try", "37.0")]
    et = s[("executor_task", "worker_pool/36")]
    (ex_key,) = [k for k in s if k[0] == "worker_execution" and k[1].startswith("worker_pool/36@")]
    ex = s[ex_key]
    finished = events_of(db, ex["span_id"])["finished"]
    overhang_ms = (finished - try_["end_time_unix_nano"]) / MS
    assert overhang_ms > 3000
    assert "dnpc.widened.end_ms" not in try_["attributes"]
    for span in (et, ex):
        assert span["end_time_unix_nano"] == try_["end_time_unix_nano"]
        assert span["attributes"]["dnpc.clipped.end_ms"] == pytest.approx(overhang_ms)
    got = rows(db, """SELECT context_type, subject, size_ms, detail FROM disagreements
                      WHERE kind = 'child_outside_parent' ORDER BY context_type""")
    assert [(t, subj) for t, subj, _, _ in got] == [("executor_task", "ends after parent"),
                                                    ("worker_execution", "ends after parent")]
    for _, _, size, detail in got:
        assert size == pytest.approx(overhang_ms) and json.loads(detail)["end"] == finished
    assert json.loads(got[0][3])["parent"] == "try:37.0"
    assert et["status_code"] == "ERROR" and et["status_message"] == "BadStateException"
    assert ex["status_code"] == "UNSET"


def test_an_execution_whose_task_raised_is_error_with_the_exception_type(replayed):
    """Every HTEX run: a worker execution inside a failed executor task is ERROR with its exception type —
    also in htex-2023, whose log names no type (the try's, from monitoring.db), and without parsl.log."""
    for name in ("htex-2026", "htex-2023", "features-2026", "nolog-2026"):
        got = rows(replayed[name], """
            SELECT p.status_message, c.status_code, c.status_message FROM spans c JOIN spans p
              ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
            WHERE c.context_type = 'worker_execution' AND p.status_code = 'ERROR'""")
        assert got, name
        assert all(code == "ERROR" and msg == parent and msg for parent, code, msg in got), (name, got)
    types = {m for (m,) in rows(replayed["features-2026"], """SELECT DISTINCT status_message FROM spans
                                                             WHERE context_type = 'worker_execution'""") if m}
    assert types == {"ValueError", "AppTimeout"}


def test_no_instants_where_the_sources_give_a_duration(replayed, tmp_path):
    """The thread pools, which have no events of their own, last from 'Adding executor' to 'Shut down
    executor'. A dependency-failed try, one row in monitoring.db (which times tries first), is one instant
    there: a 1 ns span at task_try_time_returned; timed by parsl.log alone, it lasts from launch_if_ready's
    finding of the dependency failure to the try's failure line."""
    s = spans_of(replayed["htex-2026"])
    for label in ("threads", "_parsl_internal"):
        ex = s[("executor", label)]
        assert "dnpc.instant" not in ex["attributes"]
        ev = events_of(replayed["htex-2026"], ex["span_id"])
        assert (ex["start_time_unix_nano"], ex["end_time_unix_nano"]) == (ev["added"], ev["shut_down"])
    for name in ("htex-2026", "nolog-2026"):
        (dep,) = [v for v in spans_of(replayed[name]).values()
                  if v["attributes"].get("parsl.try.final_state") == "dep_fail"]
        returned = events_of(replayed[name], dep["span_id"])["returned"]
        assert dep["attributes"]["dnpc.bounds.source"] == "monitoring_db" and dep["attributes"]["dnpc.instant"]
        assert (dep["start_time_unix_nano"], dep["end_time_unix_nano"]) == (returned, returned + 1), name
    log_only = tmp_path / "log-only.duckdb"
    replay(copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path, without_db=True), log_only)
    dep = spans_of(log_only)[("try", "27.0")]
    ev = events_of(log_only, dep["span_id"])
    assert dep["attributes"]["dnpc.bounds.source"] == "parsl_dfk" and "dnpc.instant" not in dep["attributes"]
    assert (dep["start_time_unix_nano"], dep["end_time_unix_nano"]) == (ev["dependency_failed"], ev["failed"])
    # what is left an instant lasts 1 ns, and nothing less
    for db in [*replayed.values(), log_only]:
        assert rows(db, "SELECT count(*) FROM spans WHERE end_time_unix_nano <= start_time_unix_nano") == [(0,)]
        assert rows(db, """SELECT count(*) FROM spans WHERE (attributes->>'$."dnpc.instant"')::BOOLEAN
                           AND end_time_unix_nano - start_time_unix_nano <> 1""") == [(0,)]
