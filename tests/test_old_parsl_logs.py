"""parsl.log of every Parsl release, 0.5 (2018) → 2026: the real runs users committed (tests/data/realworld,
see its README; which code wrote each is in converters/parsl_dfk.toml's samples) replay into the contexts
their parsl.log files state.

The expectations are counted here from the raw files with this file's own patterns (Parsl's templates, not
the converter's rules): one task span per submitted task id, named after its app; one try span per launch
line; the dependency links the submit lines list; HTEX executor tasks bound to their tries (named by the
launch line from 2022.10; before, the k-th 'Pushing function' line of the file is HTEX task k of the
executor launched next: an inferred binding); and ≥ 95% of the lifecycle lines of the parsl.log files
(tests/lifecycle.py) turned into observations.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from conftest import REPO
from lifecycle import lifecycle_lines, understood

from dnpc2otel import replay

REALWORLD = REPO / "tests" / "data" / "realworld"
DIRS = [
    "amandaw95+parslSample",  # 0.9.0, threads
    "annawoodard+helloworldparsl",  # 1.0.0 and a 2021-02 master, HTEX on Torque
    "funcx-faas+funcx-web-service",  # 0.7.2 (funcX fork), HTEX whose manager was refused
    "hakyimlab+TFPred-snakemake",  # 1.3.0dev0 (today's header), threads
    "jakobhuuse+cytopipe",  # 2026.06.01, HTEX
    "kommav+EEPS",  # 1.1.0 (DESC fork and a 2021 checkout), HTEX with monitoring
    "samarthm+scale_test",  # a June-2018 branch (0.5 → 0.6), IPyParallel on Slurm, seconds only
]

OLD_HEADER = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{3})? [^\s:]+:\d+ \[[A-Z]+\]  (?P<msg>.*)$")
NEW_HEADER = re.compile(r"^\d+\.\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \S+ [^\s:]+:\d+ \S+ [A-Z]+: (?P<msg>.*)$")
SUBMIT = re.compile(r"^Task (\d+) submitted for App (\S+?), (.*)$")
OLD_LAUNCH = re.compile(r"^Task (\d+) launched on (?:executor|site) (\S+)$")
NEW_LAUNCH = re.compile(r"^Parsl task (\d+) try (\d+) launched on executor (\S+?)(?: with executor id (\S+))?$")
PUSH = re.compile(r"^Pushing function .* to queue with args ")
ECHO = re.compile(r"^Sending message MessageType\.TASK_INFO, ")


@dataclass
class Expected:
    """What one parsl.log states, counted from its raw lines."""

    old: bool = False
    apps: dict[str, str] = field(default_factory=dict)  # task id → app name
    deps: set[tuple[str, str]] = field(default_factory=set)  # (task, dependency)
    tries: set[str] = field(default_factory=set)  # "task.try"
    bindings: set[tuple[str, str]] = field(default_factory=set)  # (executor task "label/id", its try)
    echo: bool = False  # the monitoring echo names the tries (1.1 → 1.2 with monitoring)


def expected_of(path: Path) -> Expected:
    exp = Expected()
    launches: Counter[str] = Counter()
    pushed = 0
    htex_ids: Counter[str] = Counter()
    for raw in path.read_text(errors="replace").splitlines():
        m = OLD_HEADER.match(raw) or NEW_HEADER.match(raw)
        if not m:
            continue  # a continuation line (config dump, traceback)
        exp.old = exp.old or m.re is OLD_HEADER
        msg = m.group("msg")
        if s := SUBMIT.match(msg):
            task, app, rest = s.groups()
            exp.apps[task] = app
            listed = re.fullmatch(r"waiting on tasks \[([\d, ]*)\]", rest)  # 0.5 – 0.9
            deps = re.findall(r"\d+", listed.group(1)) if listed else re.findall(r"task (\d+)", rest)
            exp.deps |= {(task, d) for d in deps}
        elif PUSH.match(msg):
            pushed += 1
        elif ECHO.match(msg):
            exp.echo = True
        elif n := NEW_LAUNCH.match(msg):
            task, try_, label, exec_id = n.groups()
            exp.tries.add(f"{task}.{try_}")
            if exec_id:
                exp.bindings.add((f"{label}/{exec_id}", f"{task}.{try_}"))
        elif o := OLD_LAUNCH.match(msg):
            task, label = o.groups()
            try_ = launches[task]
            launches[task] += 1
            exp.tries.add(f"{task}.{try_}")
            if pushed:  # an HTEX submit: HTEX numbers its tasks 1, 2, … in submit order
                pushed -= 1
                htex_ids[label] += 1
                exp.bindings.add((f"{label}/{htex_ids[label]}", f"{task}.{try_}"))
    return exp


def spans_of(con: duckdb.DuckDBPyConnection, trace: str, ctype: str) -> list[tuple]:
    """(context id, name, parent context type, parent context id, attributes) of a trace's spans of a type."""
    return con.execute(
        """SELECT s.attributes->>'$."dnpc.context_id"', s.name, p.context_type, p.attributes->>'$."dnpc.context_id"',
                  s.attributes
           FROM spans s LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
           WHERE s.trace_id = ? AND s.context_type = ?""",
        [trace, ctype],
    ).fetchall()


@pytest.fixture(scope="module", params=DIRS)
def replayed(request, tmp_path_factory):
    run_dir = REALWORLD / request.param / "runinfo"
    out = tmp_path_factory.mktemp("old") / "x.duckdb"
    replay(run_dir, out)
    return run_dir, out


def test_each_parsl_log_yields_its_tasks_tries_links_and_executor_tasks(replayed):
    run_dir, out = replayed
    with duckdb.connect(str(out), read_only=True) as con:
        traces = dict(con.execute("SELECT run_dir, trace_id FROM runs").fetchall())
        for log in sorted(run_dir.glob("*/parsl.log")):
            exp = expected_of(log)
            trace = traces[log.parent.name]
            what = f"{log.relative_to(REALWORLD)}"

            tasks = {cid: (name, ptype) for cid, name, ptype, _pid, _a in spans_of(con, trace, "task")}
            assert set(tasks) == set(exp.apps), f"{what}: task spans {sorted(tasks)} != submitted {sorted(exp.apps)}"
            assert {t: n for t, (n, _p) in tasks.items()} == exp.apps, f"{what}: task span names are the app names"
            assert all(p == "workflow" for _n, p in tasks.values()), f"{what}: tasks hang under the workflow"

            tries = spans_of(con, trace, "try")
            assert {cid for cid, *_ in tries} == exp.tries, f"{what}: one try span per launch"
            assert all(ptype == "task" and cid.split(".")[0] == pid for cid, _n, ptype, pid, _a in tries)
            inferred = {cid for cid, _n, _pt, _pid, a in tries if '"dnpc.inferred":"try id:' in a}
            if exp.old and not exp.echo:  # no line names the try: every try id is inferred, and says so
                assert inferred == exp.tries, f"{what}: inferred tries are marked"
            else:  # today's launch line, or the monitoring echo, names the try
                assert not inferred, f"{what}: tries the log names are not marked inferred"

            links = con.execute(
                """SELECT s.attributes->>'$."dnpc.context_id"', d.attributes->>'$."dnpc.context_id"'
                   FROM span_links l JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id
                   JOIN spans d ON d.trace_id = l.linked_trace_id AND d.span_id = l.linked_span_id
                   WHERE l.trace_id = ? AND l.attributes->>'$."dnpc.relation"' = 'depends_on'""",
                [trace],
            ).fetchall()
            assert set(links) == exp.deps, f"{what}: dependency links"

            bound = {(cid, pid) for cid, _n, ptype, pid, _a in spans_of(con, trace, "executor_task") if ptype == "try"}
            assert bound == exp.bindings, f"{what}: executor tasks bound to their tries"
            if exp.old and exp.bindings:
                marks = {a for _c, _n, ptype, _p, a in spans_of(con, trace, "executor_task") if ptype == "try"}
                assert all('"dnpc.binding":"inferred"' in a for a in marks), f"{what}: order-based binding marked"


def test_parsl_log_lifecycle_lines_become_observations(replayed):
    run_dir, out = replayed
    lines = {k: t for k, t in lifecycle_lines(run_dir).items() if k[0].endswith("parsl.log")}
    seen = understood(out)
    missed = Counter(t for k, t in lines.items() if k not in seen)
    got = len(lines) - sum(missed.values())
    assert lines, "every one of these runs has lifecycle lines in its parsl.log"
    assert got >= 0.95 * len(lines), f"{got}/{len(lines)} parsl.log lifecycle lines understood; missed {dict(missed)}"


def test_old_headers_read_as_naive_local_time(tmp_path):
    """An old record's time is its asctime (to the ms from 0.7.2, to the second before): with no epoch in
    any source the offset is assumed UTC, so the span starts at the wall-clock time of its first line."""
    run_dir = REALWORLD / "amandaw95+parslSample" / "runinfo"
    out = tmp_path / "x.duckdb"
    replay(run_dir, out)
    with duckdb.connect(str(out), read_only=True) as con:
        start, source = con.execute(
            """SELECT min(s.start_time_unix_nano), any_value(r.offset_source) FROM spans s JOIN runs r USING (trace_id)
               WHERE r.run_dir = '001' AND s.context_type = 'task'"""
        ).fetchone()
        first = con.execute("SELECT epoch_ns(TIMESTAMP '2019-11-24 17:13:21.028')").fetchone()[0]
    assert start == first  # 001/parsl.log:32 'Task 0 submitted', 17:13:21.028
    assert source.startswith("assumed: UTC")


# Parsl 1.0.0, a fresh run (ThreadPoolExecutor "threads" + HTEX "htex_local", retries=1; Python 3.11), lines 59,
# 95-98, 120-128, 133-140, 147, 153, 180-184 of its runinfo/000/parsl.log, verbatim
RETRIES_1_0 = """\
2026-12-01 23:39:12.301 parsl.dataflow.dflow:114 [INFO]  Run id is: d0bdcdfd-d63b-4c06-9f0e-6d83280d6408
2026-12-01 23:39:12.355 parsl.dataflow.dflow:772 [INFO]  Task 1 submitted for App bad, not waiting on any dependency
2026-12-01 23:39:12.355 parsl.dataflow.dflow:780 [DEBUG]  Task 1 set to pending state with AppFuture: <AppFuture super=<AppFuture at 0x7f880fcdadd0 state=pending>>
2026-12-01 23:39:12.355 parsl.dataflow.memoization:196 [DEBUG]  Task 1 will not be memoized
2026-12-01 23:39:12.356 parsl.dataflow.dflow:500 [INFO]  Task 1 launched on executor threads
2026-12-01 23:39:12.365 parsl.dataflow.dflow:772 [INFO]  Task 5 submitted for App remote, not waiting on any dependency
2026-12-01 23:39:12.365 parsl.dataflow.dflow:780 [DEBUG]  Task 5 set to pending state with AppFuture: <AppFuture super=<AppFuture at 0x7f880fcf0c10 state=pending>>
2026-12-01 23:39:12.365 parsl.dataflow.memoization:196 [DEBUG]  Task 5 will not be memoized
2026-12-01 23:39:12.365 parsl.executors.high_throughput.executor:546 [DEBUG]  Pushing function <function remote at 0x7f880fcdcfe0> to queue with args (0,)
2026-12-01 23:39:12.367 parsl.dataflow.dflow:266 [DEBUG]  Task 1 failed
2026-12-01 23:39:12.367 parsl.dataflow.dflow:276 [INFO]  Task 1 marked for retry
2026-12-01 23:39:12.367 parsl.dataflow.memoization:196 [DEBUG]  Task 1 will not be memoized
2026-12-01 23:39:12.367 parsl.dataflow.dflow:500 [INFO]  Task 5 launched on executor htex_local
2026-12-01 23:39:12.367 parsl.executors.high_throughput.executor:546 [DEBUG]  Pushing function <function remote at 0x7f880fcdcfe0> to queue with args (1,)
2026-12-01 23:39:12.367 parsl.dataflow.dflow:500 [INFO]  Task 6 launched on executor htex_local
2026-12-01 23:39:12.367 parsl.executors.high_throughput.executor:546 [DEBUG]  Pushing function <function remote at 0x7f880fcdcfe0> to queue with args (2,)
2026-12-01 23:39:12.368 parsl.dataflow.dflow:500 [INFO]  Task 7 launched on executor htex_local
2026-12-01 23:39:12.368 parsl.dataflow.dflow:500 [INFO]  Task 1 launched on executor threads
2026-12-01 23:39:12.369 parsl.dataflow.dflow:266 [DEBUG]  Task 1 failed
2026-12-01 23:39:12.752 parsl.dataflow.dflow:266 [DEBUG]  Task 5 failed
2026-12-01 23:39:12.752 parsl.dataflow.dflow:276 [INFO]  Task 5 marked for retry
2026-12-01 23:39:12.752 parsl.dataflow.memoization:196 [DEBUG]  Task 5 will not be memoized
2026-12-01 23:39:12.752 parsl.executors.high_throughput.executor:546 [DEBUG]  Pushing function <function remote at 0x7f880fcdcfe0> to queue with args (0,)
2026-12-01 23:39:12.752 parsl.dataflow.dflow:500 [INFO]  Task 5 launched on executor htex_local
"""  # noqa: E501
# Parsl 1.1.0, a fresh run (threads, retries=1, an app that fails its first try), lines 27, 30, 32-35, 45-50
RETRY_1_1 = """\
2026-12-01 23:52:51.012 parsl.dataflow.dflow:114 [INFO]  Run id is: 770f6d6d-d6c6-434e-8a43-8c0f413d798f
2026-12-01 23:52:51.062 parsl.dataflow.dflow:795 [DEBUG]  Task 0 will be sent to executor threads
2026-12-01 23:52:51.062 parsl.dataflow.dflow:874 [INFO]  Task 0 submitted for App flaky, not waiting on any dependency
2026-12-01 23:52:51.062 parsl.dataflow.dflow:882 [DEBUG]  Task 0 set to pending state with AppFuture: <AppFuture super=<AppFuture at 0x7f8f2d1787d0 state=pending>>
2026-12-01 23:52:51.062 parsl.dataflow.memoization:229 [DEBUG]  Task 0 will not be memoized
2026-12-01 23:52:51.064 parsl.dataflow.dflow:587 [INFO]  Task 0 launched on executor threads
2026-12-01 23:52:51.069 parsl.dataflow.dflow:289 [DEBUG]  Task 0 try 0 failed
2026-12-01 23:52:51.069 parsl.dataflow.dflow:313 [INFO]  Task 0 marked for retry
2026-12-01 23:52:51.069 parsl.dataflow.memoization:229 [DEBUG]  Task 0 will not be memoized
2026-12-01 23:52:51.072 parsl.dataflow.dflow:587 [INFO]  Task 0 launched on executor threads
2026-12-01 23:52:51.072 parsl.dataflow.dflow:431 [INFO]  Task 0 completed (launched -> exec_done)
"""  # noqa: E501


def _replay_excerpt(tmp_path: Path, text: str) -> duckdb.DuckDBPyConnection:
    run = tmp_path / "runinfo" / "000"
    run.mkdir(parents=True)
    (run / "parsl.log").write_text(text)
    replay(tmp_path / "runinfo", tmp_path / "x.duckdb")
    return duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)


def test_retries_before_1_1_are_counted_and_htex_ids_follow_the_push_lines(tmp_path):
    with _replay_excerpt(tmp_path, RETRIES_1_0) as con:
        [trace] = [t for (t,) in con.execute("SELECT trace_id FROM runs").fetchall()]
        tries = {cid: (pid, a) for cid, _n, _pt, pid, a in spans_of(con, trace, "try")}
        status = dict(con.execute(
            """SELECT attributes->>'$."dnpc.context_id"', status_code FROM spans WHERE context_type = 'try'"""
        ).fetchall())
        bound = {(cid, pid) for cid, _n, ptype, pid, _a in spans_of(con, trace, "executor_task") if ptype == "try"}
    # task 1 (threads) failed, was retried and failed again: the second launch and failure are try 1
    assert set(tries) == {"1.0", "1.1", "5.0", "5.1", "6.0", "7.0"}
    assert status["1.0"] == status["1.1"] == "ERROR"
    assert all('"dnpc.inferred":"try id:' in a for _p, a in tries.values())
    # HTEX tasks 1, 2, 3 are DFK tasks 5, 6, 7; the retry of task 5 is HTEX task 4; the thread pool has none
    assert bound == {("htex_local/1", "5.0"), ("htex_local/2", "6.0"), ("htex_local/3", "7.0"), ("htex_local/4", "5.1")}


def test_a_retry_in_1_1_takes_its_try_from_the_failure_line(tmp_path):
    with _replay_excerpt(tmp_path, RETRY_1_1) as con:
        rows = {cid: (status, state) for cid, status, state in con.execute(
            """SELECT attributes->>'$."dnpc.context_id"', status_code, attributes->>'$."parsl.try.final_state"'
               FROM spans WHERE context_type = 'try'"""
        ).fetchall()}
    # 'Task 0 try 0 failed' ends try 0; the completion after the relaunch is try 1
    assert rows == {"0.0": ("ERROR", None), "0.1": ("UNSET", "exec_done")}
