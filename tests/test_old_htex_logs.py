"""HTEX interchange, manager and worker logs of every Parsl release (0.7 of 2018 → 2026), replayed from real
runs (tests/data/realworld): the contexts their files must yield — managers, workers, worker executions and
executor tasks, in the two hierarchies (executor task › worker execution; block › manager › worker) — and
≥ 95% of their lifecycle lines (tests/lifecycle.py) turned into observations.

What each run must yield is counted here from the raw files with this file's own patterns, not with the
converters'. Only the HTEX files are asserted: parsl.log (the DFK's side, and the binding of a try to its
HTEX task) belongs to other definitions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import duckdb
import lifecycle
import pytest

from dnpc2otel import replay

REALWORLD = Path(__file__).parent / "data" / "realworld"
DIRS = ["annawoodard+helloworldparsl", "kommav+EEPS", "funcx-faas+funcx-web-service", "jakobhuuse+cytopipe"]
HTEX_KINDS = {"interchange.log", "manager.log", "worker_N.log", "funcx_worker_N.log"}

# <run>/<label>/interchange.log; <run>/<label>/[block-<B>/]<manager>/{manager,worker_N,funcx_worker_N}.log
IX_PATH = re.compile(r"^(?P<run>[^/]+)/(?P<label>[^/]+)/interchange\.log$")
POOL_PATH = re.compile(
    r"^(?P<run>[^/]+)/(?P<label>[^/]+)/(?:block-(?P<block>[^/]+)/)?(?P<mgr>[0-9a-f]{6,})/"
    r"(?:manager|(?:funcx_)?worker_(?P<rank>\d+))\.log$"
)
MANAGER_IN_LINE = re.compile(r"manager:? b'(?P<mgr>[0-9a-f]+)'")
BLOCK_OF_MANAGER = re.compile(r"Registration info for manager b'(?P<mgr>[0-9a-f]+)': .*'block_id': '(?P<block>[^']+)'")
BLOCK_ID_LINE = re.compile(r"\] {1,2}Block ID: (?P<block>\d+)$")
RECEIVED = re.compile(r"(?:\]  ?|: )Received (?:executor )?task (?P<id>\d+)$")
SENT = re.compile(r"Sent tasks: \[(?P<ids>[\d, ]*)\] to (?:manager )?b'")
FETCHED = re.compile(r"Fetched task:(?P<id>\d+)$")
GOT = re.compile(r"Got (?:executor )?tasks: \[(?P<ids>[\d, ]*)\]")
FUNCX_WORKER_REGISTERED = re.compile(r"Received registration message from worker: (?P<rank>\d+)$")


class Expected:
    """Per run (000, 001 …): the contexts the HTEX files name."""

    def __init__(self) -> None:
        self.managers: set[str] = set()
        self.blocks: dict[str, str] = {}  # manager → "<label>/<block>", where some file names it
        self.workers: set[str] = set()  # "<manager>/<rank>"
        self.executions: list[str] = []  # "<label>/<id>@<manager>/<rank>", one per 'Received task' line
        self.executor_tasks: set[str] = set()  # "<label>/<id>"


def expected(run_dir: Path) -> dict[str, Expected]:
    runs: dict[str, Expected] = defaultdict(Expected)
    for path in sorted(run_dir.rglob("*.log")):
        rel = path.relative_to(run_dir).as_posix()
        lines = path.read_text(errors="replace").splitlines()
        if m := IX_PATH.match(rel):
            e, label = runs[m["run"]], m["label"]
            for line in lines:
                if mm := MANAGER_IN_LINE.search(line):
                    e.managers.add(mm["mgr"])
                if mm := BLOCK_OF_MANAGER.search(line):
                    e.blocks[mm["mgr"]] = f"{label}/{mm['block']}"
                for mm in (SENT.search(line), FETCHED.search(line)):
                    if mm:
                        e.executor_tasks.update(f"{label}/{i}" for i in re.findall(r"\d+", mm.group(1)))
        elif m := POOL_PATH.match(rel):
            e, label, mgr, rank = runs[m["run"]], m["label"], m["mgr"], m["rank"]
            e.managers.add(mgr)
            if m["block"] is not None:
                e.blocks[mgr] = f"{label}/{m['block']}"
            if rank is not None:
                e.workers.add(f"{mgr}/{rank}")
            for line in lines:
                if mm := BLOCK_ID_LINE.search(line):
                    e.blocks[mgr] = f"{label}/{mm['block']}"
                if mm := FUNCX_WORKER_REGISTERED.search(line):
                    e.workers.add(f"{mgr}/{mm['rank']}")
                if mm := GOT.search(line):
                    e.executor_tasks.update(f"{label}/{i}" for i in re.findall(r"\d+", mm["ids"]))
                if rank is not None and (mm := RECEIVED.search(line)):
                    e.executions.append(f"{label}/{mm['id']}@{mgr}/{rank}")
                    e.executor_tasks.add(f"{label}/{mm['id']}")
    return dict(runs)


@pytest.fixture(scope="module", params=DIRS)
def replayed(request, tmp_path_factory):
    run_dir = REALWORLD / request.param / "runinfo"
    duck = tmp_path_factory.mktemp(request.param.replace("+", "_")) / "x.duckdb"
    replay(run_dir, duck)
    return request.param, run_dir, duck


def spans_of(con, trace_id: str, context_type: str) -> dict[str, dict]:
    """{context id: {span_id, parent_type, parent_id}} of one run's spans of a type."""
    rows = con.execute(
        """SELECT s.attributes->>'$."dnpc.context_id"', s.span_id, p.context_type, p.attributes->>'$."dnpc.context_id"'
           FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
           WHERE s.trace_id = ? AND s.context_type = ?""",
        [trace_id, context_type],
    ).fetchall()
    return {cid: {"span_id": sid, "parent_type": pt, "parent_id": pid} for cid, sid, pt, pid in rows}


def links_of(con, trace_id: str, relation: str) -> set[tuple[str, str, str]]:
    """(context id, linked type, linked context id) of one run's span links of a relation."""
    rows = con.execute(
        """SELECT s.attributes->>'$."dnpc.context_id"', t.context_type, t.attributes->>'$."dnpc.context_id"'
           FROM span_links l JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id
           JOIN spans t ON t.trace_id = l.linked_trace_id AND t.span_id = l.linked_span_id
           WHERE l.trace_id = ? AND l.attributes->>'$."dnpc.relation"' = ?""",
        [trace_id, relation],
    ).fetchall()
    return set(rows)


def test_contexts_of_the_htex_files(replayed):
    name, run_dir, duck = replayed
    want = expected(run_dir)
    assert want, f"{name}: no HTEX file found"
    with duckdb.connect(str(duck), read_only=True) as con:
        traces = dict(con.execute("SELECT run_dir, trace_id FROM runs").fetchall())
        for run, e in sorted(want.items()):
            assert run in traces, f"{name}/{run}: no trace for the run"
            t = traces[run]
            managers = spans_of(con, t, "manager")
            workers = spans_of(con, t, "worker")
            executions = spans_of(con, t, "worker_execution")
            executor_tasks = spans_of(con, t, "executor_task")
            where = f"{name}/{run}"

            # the resource hierarchy: block › manager › worker
            assert set(managers) == e.managers, where
            for mgr, block in e.blocks.items():
                assert (managers[mgr]["parent_type"], managers[mgr]["parent_id"]) == ("block", block), (where, mgr)
            for mgr in e.managers - set(e.blocks):  # ≤ 0.7.x: no file names the block
                assert managers[mgr]["parent_type"] != "block", (where, mgr)
            assert set(workers) == e.workers, where
            for w, s in workers.items():
                assert (s["parent_type"], s["parent_id"]) == ("manager", w.split("/")[0]), (where, w)

            # the task hierarchy: executor task › worker execution (also a child of its worker)
            assert len(e.executions) == len(set(e.executions)), where
            assert set(executions) == set(e.executions), where
            for x, s in executions.items():
                assert (s["parent_type"], s["parent_id"]) == ("executor_task", x.split("@")[0]), (where, x)
            also = links_of(con, t, "also_child_of")
            assert {(x, "worker", x.split("@")[1]) for x in e.executions} <= also, where
            # every executor task the HTEX files name (parsl.log may name more: tasks never dispatched)
            htex_named = {
                cid for (cid,) in con.execute(
                    """SELECT DISTINCT context_id FROM observations WHERE trace_id = ?
                       AND context_type = 'executor_task' AND converter LIKE 'htex%'""", [t]).fetchall()
            }
            assert htex_named == e.executor_tasks, where
            assert e.executor_tasks <= set(executor_tasks), where
            ran_on = links_of(con, t, "ran_on_manager")
            for x in e.executions:
                task, worker = x.split("@")
                assert (task, "manager", worker.split("/")[0]) in ran_on, (where, x)


def test_results_of_a_single_manager_interchange_before_2022(tmp_path):
    """≤ 1.2 the interchange names no result; with one manager, 'Current tasks: [..]' tells which came back."""
    run_dir = REALWORLD / "kommav+EEPS" / "runinfo"
    duck = tmp_path / "x.duckdb"
    replay(run_dir, duck)
    with duckdb.connect(str(duck), read_only=True) as con:
        [trace] = con.execute("SELECT trace_id FROM runs WHERE run_dir = '001'").fetchone()
        results = con.execute(
            """SELECT context_id, count(*), min(local_ns) FROM observations WHERE trace_id = ?
               AND context_type = 'executor_task' AND event = 'result_received' GROUP BY ALL""", [trace]).fetchall()
        completed = dict(con.execute(
            """SELECT split_part(context_id, '@', 1), max(local_ns) FROM observations WHERE trace_id = ?
               AND context_type = 'worker_execution' AND event = 'completed' GROUP BY ALL""", [trace]).fetchall())
    results = {task: (n, at) for task, n, at in results}
    assert len(completed) == 51 and set(results) == set(completed)  # every task the workers completed
    assert all(n == 1 for n, _ in results.values())
    # the interchange hears of a result after the worker completed it (one host: both clocks the laptop's)
    assert all(results[t][1] >= completed[t] for t in completed)


def test_lifecycle_lines_of_the_htex_files(replayed):
    name, run_dir, duck = replayed
    lines = {k: v for k, v in lifecycle.lifecycle_lines(run_dir).items() if lifecycle.kind_of(k[0]) in HTEX_KINDS}
    seen = lifecycle.understood(duck)
    missed = sorted({(k[0], v) for k, v in lines.items() if k not in seen})
    understood = sum(k in seen for k in lines)
    assert lines, name
    assert understood >= 0.95 * len(lines), f"{name}: {understood}/{len(lines)} understood; missed: {missed[:20]}"
