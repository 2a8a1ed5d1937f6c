"""HighThroughputExecutor: executor tasks, worker executions, blocks, managers and workers (issue #4).

Two hierarchies meet at each worker execution: try › executor_task › worker_execution (its primary parent)
and workflow › executor › block › manager › worker › worker_execution (an also_child_of link). Checked on
the corpus (Parsl 2023 and 2026, text and JSON logs) and on fresh runs: one without worker_debug, one with,
and one whose manager is killed mid-task.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, corpus_runs

from dnpc2otel import replay
from dnpc2otel.sources.definitions import load_all
from dnpc2otel.sources.samples import check_definition

NS = 1_000_000_000
HTEX_CORPUS = [p for p in corpus_runs() if p.parent.name.startswith("htex")]

def chain(duck: Path) -> tuple[dict, list[dict]]:
    """The run's chain summary (one run per database here) and the rows of tries not fully chained, from
    the views htex_try_chain / htex_chain_summary that the HTEX definitions add to every replayed database."""
    con = duckdb.connect(str(duck), read_only=True)
    try:
        cols = ["tries_launched", "tries_ran", "tries_fully_chained", "pct_fully_chained"]
        rows = con.execute(f"SELECT {', '.join(cols)} FROM htex_chain_summary").fetchall()
        assert len(rows) == 1, rows
        bad = con.execute(
            "SELECT try, executor_task_id, has_executor_task, has_worker_execution, ran FROM htex_try_chain "
            "WHERE NOT fully_chained ORDER BY try"
        ).fetchall()
        return dict(zip(cols, rows[0], strict=True)), [
            dict(zip(["try", "executor_task_id", "has_executor_task", "has_worker_execution", "ran"], b, strict=True))
            for b in bad
        ]
    finally:
        con.close()


def spans(duck: Path, ctype: str) -> dict[str, dict]:
    """Spans of one context type by context id."""
    con = duckdb.connect(str(duck), read_only=True)
    try:
        rows = con.execute(
            """SELECT json_extract_string(attributes, '$."dnpc.context_id"'), span_id, parent_span_id,
                      start_time_unix_nano, end_time_unix_nano, status_code, status_message, attributes,
                      (SELECT list(e.name ORDER BY e.time_unix_nano, e.name) FROM span_events e
                       WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id)
               FROM spans s WHERE context_type = ?""",
            [ctype],
        ).fetchall()
    finally:
        con.close()
    keys = ["span_id", "parent", "start", "end", "status", "status_message", "attributes", "events"]
    out = {}
    for cid, *rest in rows:
        d = dict(zip(keys, rest, strict=True))
        d["attributes"] = json.loads(d["attributes"])
        d["events"] = d["events"] or []
        out[cid] = d
    return out


def links(duck: Path, relation: str) -> set[tuple[str, str]]:
    con = duckdb.connect(str(duck), read_only=True)
    try:
        return set(con.execute(
            """SELECT span_id, linked_span_id FROM span_links
               WHERE json_extract_string(attributes, '$."dnpc.relation"') = ?""", [relation]).fetchall())
    finally:
        con.close()


def utc_offset_s(duck: Path) -> int:
    con = duckdb.connect(str(duck), read_only=True)
    try:
        return int(con.execute("SELECT utc_offset_seconds FROM runs").fetchone()[0])
    finally:
        con.close()


# ---------------------------------------------------------------------- reading worker logs independently
_WORKER_LOG = re.compile(r"^(?P<run>[^/]+)/(?P<label>[^/]+)/block-(?P<block>[^/]+)/(?P<manager>[^/]+)/"
                         r"worker_(?P<rank>\d+)\.(?:log|jsonlog)$")
_TASK_LINE = re.compile(r"(Received executor task|All processing finished for executor task) (\d+)$")
_EPOCH = re.compile(r'^(\d+\.\d+) |"created": (\d+\.\d+)')
_LOCAL = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def worker_log_times(run_dir: Path, offset_s: int) -> dict[str, tuple[int, int | None]]:
    """worker_execution id → (time of 'Received executor task', of 'All processing finished …'), in ns."""
    out: dict[str, list] = {}
    for path in sorted(run_dir.rglob("worker_*")):
        m = _WORKER_LOG.match(path.relative_to(run_dir).as_posix())
        if not m:
            continue
        for line in path.read_text().splitlines():
            text = json.loads(line)["formatted"] if path.suffix == ".jsonlog" else line
            t = _TASK_LINE.search(text)
            if not t:
                continue
            if e := _EPOCH.search(line):
                ns = int(Decimal(e.group(1) or e.group(2)) * NS)
            else:  # before 2026.01.26: naive local time of the node, in ms
                local = datetime.strptime(_LOCAL.match(line).group(1), "%Y-%m-%d %H:%M:%S.%f")
                ns = (local - datetime(1970, 1, 1)) // timedelta(microseconds=1) * 1000 - offset_s * NS
            cid = f"{m['label']}/{t.group(2)}@{m['manager']}/{m['rank']}"
            times = out.setdefault(cid, [None, None])
            times[0 if t.group(1).startswith("Received") else 1] = ns
    return {k: (v[0], v[1]) for k, v in out.items()}


# ---------------------------------------------------------------------- shared assertions
def assert_two_hierarchies(duck: Path, run_dir: Path) -> dict:
    """Every try that ran on HTEX is fully chained; worker executions are timed by their log lines."""
    summary, bad = chain(duck)
    assert summary["tries_ran"] > 0
    assert summary["tries_fully_chained"] == summary["tries_ran"], bad
    assert summary["pct_fully_chained"] == 100.0
    # a try that did not run (never dispatched, executor failed) still has its executor task
    assert all(b["has_executor_task"] and not b["ran"] for b in bad), bad

    executions = spans(duck, "worker_execution")
    workers = spans(duck, "worker")
    managers = spans(duck, "manager")
    blocks = spans(duck, "block")
    executor_tasks = spans(duck, "executor_task")
    by_span = {s["span_id"]: (cid, s) for kind in (workers, managers, blocks, executor_tasks)
               for cid, s in kind.items()}

    # start/end of each worker execution are exactly its worker log lines
    logged = worker_log_times(run_dir, utc_offset_s(duck))
    assert set(executions) == set(logged)
    observed: dict[str, tuple[int, int]] = {}
    for cid, (received, finished) in logged.items():
        span = executions[cid]
        attrs = span["attributes"]
        # nesting clips an execution that outlives its executor task (the worker logs 'All processing finished'
        # after the DFK has the result) and says by how much; an execution known by one line lasts 1 ns
        start = span["start"] - round((attrs.get("dnpc.clipped.start_ms") or 0) * 1e6)
        end = span["end"] + round((attrs.get("dnpc.clipped.end_ms") or 0) * 1e6)
        assert start == received, cid
        assert end == (finished if finished is not None else received + 1), cid
        observed[cid] = (start, finished if finished is not None else received)
        assert attrs.get("dnpc.instant", False) == (finished is None), cid
        assert span["events"][0] == "received"

    # the resource side: execution → worker → manager → block, all named by the worker log's path
    also = links(duck, "also_child_of")
    ran_on = links(duck, "ran_on_manager")
    for cid, span in executions.items():
        label, rest = cid.split("/", 1)
        htex_id, worker_id = rest.split("@")
        manager_id = worker_id.split("/")[0]
        assert by_span[span["parent"]][0] == f"{label}/{htex_id}"  # primary parent: the executor task
        assert (span["span_id"], workers[worker_id]["span_id"]) in also
        assert workers[worker_id]["parent"] == managers[manager_id]["span_id"]
        block_id = f"{label}/{span['attributes']['parsl.block.id']}"
        assert managers[manager_id]["parent"] == blocks[block_id]["span_id"]
        assert (executor_tasks[f"{label}/{htex_id}"]["span_id"], managers[manager_id]["span_id"]) in ran_on
        # the resource spans cover what ran on them
        for holder in (workers[worker_id], managers[manager_id]):
            assert holder["start"] <= observed[cid][0] and observed[cid][1] <= holder["end"], cid
    # no HTEX context hangs loose under the workflow
    for kind in (executions, workers, managers, blocks, executor_tasks):
        assert not any(s["attributes"].get("dnpc.orphan") for s in kind.values())
    return {"summary": summary, "executions": executions, "managers": managers, "blocks": blocks,
            "executor_tasks": executor_tasks, "workers": workers}


def assert_blocks_carry_job_ids(duck: Path, run_dir: Path) -> None:
    blocks = spans(duck, "block")
    assert blocks
    launched = {}
    for log in run_dir.glob("*/parsl.log"):
        for m in re.finditer(r"Launched block (\S+) (?:on executor (\S+) )?with job ID (\S+)", log.read_text()):
            launched[m.group(1)] = m.group(3)
    db = run_dir / "monitoring.db"
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = con.execute("SELECT DISTINCT executor_label, block_id, job_id FROM block").fetchall()
        con.close()
        assert {f"{label}/{b}": job for label, b, job in rows} == {
            cid: s["attributes"].get("parsl.block.job_id") for cid, s in blocks.items()}
    for cid, span in blocks.items():
        assert span["attributes"]["parsl.block.job_id"], cid
        block = cid.split("/", 1)[1]
        if block in launched:
            assert span["attributes"]["parsl.block.job_id"] == launched[block]


# ---------------------------------------------------------------------- the corpus
@pytest.fixture(params=HTEX_CORPUS, ids=[p.parent.name for p in HTEX_CORPUS])
def htex_corpus_run(request):
    return request.param


def test_corpus_two_hierarchies(htex_corpus_run, tmp_path):
    out = tmp_path / "out.duckdb"
    summary = replay(htex_corpus_run, out)
    assert summary.lines_not_understood == 0
    assert summary.dangling_links == 0
    got = assert_two_hierarchies(out, htex_corpus_run)
    # 31 tries of the workflow ran on the pool (the two on the thread pool have no executor id)
    assert got["summary"] == {"tries_launched": 31, "tries_ran": 31, "tries_fully_chained": 31,
                              "pct_fully_chained": 100.0}
    assert summary.contexts["executor_task"] == summary.contexts["worker_execution"] == 31
    assert summary.contexts["manager"] == 1 and summary.contexts["worker"] == 2
    assert_blocks_carry_job_ids(out, htex_corpus_run)
    sources = {s.converter for s in summary.sources}
    assert {"htex_interchange", "htex_manager", "htex_worker"} <= sources


def test_corpus_from_logs_alone(htex_corpus_run, tmp_path):
    """Without monitoring.db the logs alone give both hierarchies and the blocks' job ids."""
    logs = copy_run(htex_corpus_run, tmp_path, without_db=True)
    out = tmp_path / "logs.duckdb"
    replay(logs, out)
    got = assert_two_hierarchies(out, logs)
    assert got["summary"]["tries_fully_chained"] == 31
    assert_blocks_carry_job_ids(out, logs)


def test_corpus_manager_attributes(htex_corpus_run, tmp_path):
    out = tmp_path / "out.duckdb"
    replay(htex_corpus_run, out)
    managers = spans(out, "manager")
    (manager_id, manager), = managers.items()
    assert manager["attributes"]["parsl.htex.manager.id"] == manager_id
    assert manager["attributes"]["parsl.block.id"] == "0"
    assert manager["attributes"]["host.name"] == "vm"  # from the interchange's registration line
    assert manager["attributes"]["parsl.htex.manager.worker_count"] == 2
    assert "registered" in manager["events"] and "started" in manager["events"]
    # the executor task is timed by the executor's logs when they say more than the DFK's launch line
    for task in spans(out, "executor_task").values():
        assert task["attributes"]["parsl.executor.label"] == "worker_pool"
        assert "launched" in task["events"]


def test_run_killed_before_cleanup(tmp_path):
    """Every log cut at one instant mid-run (the DFK host died): what was logged is still chained."""
    run_dir = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path, without_db=True)
    received = sorted(Decimal(t) for log in (run_dir / "000" / "worker_pool").rglob("worker_*.log")
                      for t in re.findall(r"^(\d+\.\d+) .*Received executor task", log.read_text(), re.MULTILINE))
    cut = received[15]  # half the pool's tasks reached a worker
    for log in [run_dir / "000" / "parsl.log", *(run_dir / "000" / "worker_pool").rglob("*.log")]:
        kept, keep = [], True
        for line in log.read_text().splitlines(keepends=True):
            if m := re.match(r"(\d+\.\d+) ", line):  # a record; lines without a time continue the last one
                keep = Decimal(m.group(1)) <= cut
            if keep:
                kept.append(line)
        log.write_text("".join(kept))
    out = tmp_path / "cut.duckdb"
    summary = replay(run_dir, out)
    assert summary.lines_not_understood == 0
    got = assert_two_hierarchies(out, run_dir)
    assert got["summary"]["tries_fully_chained"] == got["summary"]["tries_ran"] == 16
    assert got["summary"]["tries_launched"] > 16
    # tries launched but not yet received by a worker keep their executor task, without an execution
    _, bad = chain(out)
    assert bad and all(b["has_executor_task"] and not b["has_worker_execution"] for b in bad)


def test_worker_exception_marks_its_execution(tmp_path):
    """'Caught an exception' names no task: it belongs to the task the worker received last."""
    run_dir = copy_run(CORPUS / "htex-2026" / "runinfo", tmp_path, without_db=True)
    log = next((run_dir / "000" / "worker_pool").rglob("worker_0.log"))
    lines = log.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.rstrip().endswith("Received executor task 8"))
    prefix = lines[at].split(" worker INFO: ")[0]
    lines.insert(at + 1, f"{prefix} worker INFO: Caught an exception: No module named 'nowhere'\n")
    log.write_text("".join(lines))
    out = tmp_path / "exc.duckdb"
    replay(run_dir, out)
    # executions of tasks that failed are ERROR too, from their executor task (dnpc.status_from_parent); the
    # one the worker itself says raised has its own message
    executions = spans(out, "worker_execution")
    parents = {s["span_id"]: s for s in spans(out, "executor_task").values()}
    failed = {cid: s for cid, s in executions.items() if s["status"] == "ERROR"}
    assert f"worker_pool/8@{log.parent.name}/0" in failed
    for cid, s in failed.items():
        if cid != f"worker_pool/8@{log.parent.name}/0":
            assert parents[s["parent"]]["status"] == "ERROR", cid
    assert failed[f"worker_pool/8@{log.parent.name}/0"]["status_message"] == "No module named 'nowhere'"


# ---------------------------------------------------------------------- fresh runs
@pytest.mark.slow
def test_fresh_htex_without_worker_debug(fresh_htex, tmp_path):
    out = tmp_path / "fresh.duckdb"
    summary = replay(fresh_htex, out)
    assert summary.lines_not_understood == 0
    got = assert_two_hierarchies(out, fresh_htex)
    # 8 work + 3 flaky (2 of them retried) + 2 shell tries on the pool
    assert got["summary"]["tries_fully_chained"] == got["summary"]["tries_launched"] == 15
    assert_blocks_carry_job_ids(out, fresh_htex)


@pytest.mark.slow
def test_fresh_htex_worker_debug_interchange_events(fresh_htex_debug, tmp_path):
    out = tmp_path / "debug.duckdb"
    replay(fresh_htex_debug, out)
    got = assert_two_hierarchies(out, fresh_htex_debug)
    assert got["summary"]["tries_fully_chained"] == 15
    executions_of = {}
    for cid, execution in got["executions"].items():
        executions_of[cid.split("@")[0]] = execution
    for cid, task in got["executor_tasks"].items():
        # queued, dispatched, taken by the manager, run, result back: all from the executor's own logs
        for event in ("launched", "interchange_queued", "dispatched", "manager_received", "result_received"):
            assert event in task["events"], (cid, event)
        assert task["attributes"]["dnpc.bounds.source"] == "htex_interchange"
        execution = executions_of[cid]
        assert task["start"] <= execution["start"] and execution["end"] <= task["end"], cid
    assert_blocks_carry_job_ids(out, fresh_htex_debug)


@pytest.mark.slow
def test_fresh_htex_manager_killed(fresh_htex_faults, tmp_path):
    """A manager killed mid-task: ManagerLost, a retry on the other manager, both kept apart and chained."""
    out = tmp_path / "faults.duckdb"
    summary = replay(fresh_htex_faults, out)
    assert summary.lines_not_understood == 0 and summary.dangling_links == 0
    got = assert_two_hierarchies(out, fresh_htex_faults)
    assert got["summary"]["pct_fully_chained"] == 100.0
    managers, tasks = got["managers"], got["executor_tasks"]
    # two blocks with a manager each (the strategy may start a third block for the lost one)
    assert len(managers) >= 2 and len(got["blocks"]) >= 2

    lost = [m for m in managers.values() if m["status"] == "ERROR"]
    assert len(lost) == 1 and "heartbeats_missed" in lost[0]["events"]
    lost_id = lost[0]["attributes"]["parsl.htex.manager.id"]
    cancelled = {cid for cid, t in tasks.items() if "manager_lost" in t["events"]}
    assert cancelled and all(tasks[c]["status"] == "ERROR" for c in cancelled)

    # the killer task: try 0 ran on the lost manager, try 1 (a new HTEX task) on the other one
    task = _task_of_app(out, "kill_my_manager_once")
    killer = sorted((cid, t) for cid, t in spans(out, "try").items() if cid.split(".")[0] == task)
    assert [cid.split(".")[1] for cid, _ in killer] == ["0", "1"]
    ran_on = {cid.split("@")[0]: cid.split("@")[1].split("/")[0] for cid in got["executions"]}
    first, second = (f"pool/{t['attributes']['parsl.executor.task_id']}" for _, t in killer)
    assert first != second
    assert ran_on[first] == lost_id and ran_on[second] != lost_id
    assert first in cancelled
    assert killer[0][1]["status"] == "ERROR" and killer[1][1]["status"] != "ERROR"


def _task_of_app(duck: Path, app: str) -> str:
    con = duckdb.connect(str(duck), read_only=True)
    try:
        return con.execute(
            """SELECT json_extract_string(attributes, '$."dnpc.context_id"') FROM spans
               WHERE context_type = 'task' AND name = ?""", [app]).fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------------- definitions
def test_htex_definitions_pass_their_samples():
    defs = {d.name: d for d in load_all()}
    for name in ("htex_interchange", "htex_manager", "htex_worker", "parsl_dfk"):
        failed = [r for r in check_definition(defs[name]) if not r.ok]
        assert not failed, [(r.rule, r.detail, r.message) for r in failed]
    types = {t for d in defs.values() for t in d.contexts}
    assert {"executor_task", "manager", "worker", "worker_execution"} <= types
    assert defs["htex_worker"].contexts["worker_execution"].parents[0] == "executor_task"


@pytest.mark.parametrize("name", ["htex-2026", "htex-json-2026", "htex-2023"])
def test_replay_summary_reports_every_htex_try_chained(name, tmp_path):
    """The summary line and the htex_chain_summary view the HTEX definitions add to the output."""
    out = tmp_path / "chain.duckdb"
    summary = replay(CORPUS / name / "runinfo", out)
    assert summary.lines["HTEX tries that ran, fully chained"] == "31/31 (100.0%)"
    with duckdb.connect(str(out), read_only=True) as c:
        assert c.execute("SELECT tries_ran, tries_fully_chained FROM htex_chain_summary").fetchall() == [(31, 31)]


@pytest.mark.parametrize("name", ["htex-2026", "htex-json-2026", "htex-2023"])
def test_block_carries_its_job_script_and_exit_code_and_managers_their_node_rows(name, tmp_path):
    run = CORPUS / name / "runinfo"
    (script,) = sorted((run / "000" / "submit_scripts").glob("parsl.*.block-*.sh"))
    exit_code = (script.parent / (script.name + ".ec")).read_text().strip()
    out = tmp_path / "blocks.duckdb"
    replay(run, out)
    with duckdb.connect(str(out), read_only=True) as c:
        (attrs,) = c.execute("SELECT attributes FROM spans WHERE context_type = 'block'").fetchone()
        managers = [json.loads(a) for (a,) in c.execute("SELECT attributes FROM spans WHERE context_type = 'manager'")
                    .fetchall()]
        nodes = db_manager_ids(run / "monitoring.db")
    attrs = json.loads(attrs)
    assert attrs["parsl.block.job_name"] == script.name.removesuffix(".sh")
    assert attrs["parsl.block.exit_code"] == exit_code
    assert "provider_submit_scripts" in attrs["dnpc.sources"]
    assert {m["parsl.htex.manager.id"] for m in managers} == nodes
    assert all("monitoring_db" in m["dnpc.sources"] and m["host.cpu.count"] >= 1 for m in managers)


def db_manager_ids(db: Path) -> set[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT uid FROM node")}
    finally:
        con.close()
