"""Runs whose records do not bind every context: chained as far as the other sources allow, and said so.

Without parsl.log (`Config(initialize_logging=False)`) no record names both a try and its HTEX task. The
binding `try_by_worker_process` (converters/htex_worker.toml) infers it from monitoring.db's resource samples,
which name the pid of the worker process that ran the try, and the worker logs, which say which HTEX task
that process ran and when. The inference is checked against independent evidence: parsl.log's launch lines
in the corpus runs that have them, and in nolog-2026 the resource monitor's own process name in the worker
logs ('Monitor-Wrapper-<task>'). Where nothing ties a try to its task, the summary says 0/N and why.

Also here: sources are expected to describe only the contexts their definitions say (`[describes.TYPE]`),
so a thread pool is not `missing_in_source` from monitoring.db, while a real absence still is.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, corpus_runs, make_parsl_run

from dnpc2otel import replay
from dnpc2otel.errors import DefinitionError
from dnpc2otel.reconcile import reconcile
from dnpc2otel.sources.definitions import (
    Binding,
    Catalog,
    ContextType,
    Definition,
    Expectation,
    System,
    context_types,
    load_catalog,
)
from dnpc2otel.tables import OBSERVATIONS, OBSERVED, create_stage

LABEL = "HTEX tries that ran, fully chained"
LAUNCH = re.compile(r"Parsl task (\d+) try (\d+) launched on executor (\S+) with executor id (\d+)$")
RECEIVED = re.compile(r"Received (?:executor )?task (\d+)$")
COMPLETED = re.compile(r"Completed (?:executor )?task (\d+)$")
HTEX_RUNS = ["htex-2026", "htex-json-2026", "htex-2023", "features-2026", "mixkill-2026", "filelogging-2026"]


# ---------------------------------------------------------------------- reading the real files
def htex_tries_that_ran(run_dir: Path) -> set[str]:
    """'task.try' of every try monitoring.db says ran on an HTEX executor (one with an interchange log)."""
    labels = {p.parent.name for p in run_dir.glob("*/*/interchange.*log")}
    with sqlite3.connect(f"file:{run_dir / 'monitoring.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT task_id, try_id, task_executor FROM try WHERE task_try_time_running IS NOT NULL")
        return {f"{task}.{try_}" for task, try_, label in rows if label in labels}


def launch_lines(log: Path) -> dict[str, str]:
    """executor task 'label/N' → 'task.try', as parsl.log's launch lines name them (JSON or text)."""
    out = {}
    for line in log.read_text().splitlines():
        text = json.loads(line)["formatted"] if log.suffix == ".jsonlog" else line
        if m := LAUNCH.search(text):
            out[f"{m[3]}/{m[4]}"] = f"{m[1]}.{m[2]}"
    return out


def monitor_wrapper_tasks(run_dir: Path) -> dict[str, str]:
    """executor task 'label/N' → Parsl task id, from the worker logs alone: the resource monitor forked while
    the worker runs HTEX task N is named Monitor-Wrapper-<Parsl task id> (parsl/monitoring/remote.py), and
    with worker_debug its last DEBUG line lands in the worker's log, between 'Received' and 'Completed'."""
    out = {}
    for log in run_dir.glob("*/*/block-*/*/worker_*.log"):
        label, current = log.parts[-4], None
        for line in log.read_text().splitlines():
            if m := RECEIVED.search(line):
                current = m[1]
            elif COMPLETED.search(line):
                current = None
            elif current and (m := re.match(r"\S+ \S+ \S+ Monitor-Wrapper-(\d+)-\d+ ", line)):
                out[f"{label}/{current}"] = m[1]
    return out


def bound_tries(db: Path) -> dict[str, tuple[str, str | None]]:
    """executor task id → (its parent try's id, dnpc.binding), for executor tasks whose parent is a try."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("""
            SELECT e.attributes->>'$."dnpc.context_id"', t.attributes->>'$."dnpc.context_id"',
                   e.attributes->>'$."dnpc.binding"'
            FROM spans e JOIN spans t ON t.trace_id = e.trace_id AND t.span_id = e.parent_span_id
            WHERE e.context_type = 'executor_task' AND t.context_type = 'try'""").fetchall()
    return {e: (t, how) for e, t, how in rows}


def orphans(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("""SELECT context_type, count(*) FROM spans
                                   WHERE (attributes->>'$."dnpc.orphan"')::BOOLEAN GROUP BY 1""").fetchall())


def without_parsl_log(run_dir: Path, dest: Path) -> Path:
    target = dest / "runinfo"
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("parsl.log", "parsl.jsonlog"))
    return target


# ---------------------------------------------------------------------- the bundled run without parsl.log
def test_nolog_corpus_run_is_chained_through_the_worker_processes(tmp_path):
    run_dir = CORPUS / "nolog-2026" / "runinfo"
    assert not list(run_dir.glob("*/parsl.*log"))
    out = tmp_path / "nolog.duckdb"
    summary = replay(run_dir, out)
    ran = htex_tries_that_ran(run_dir)
    n = len(ran)
    assert n == 31
    assert summary.lines[LABEL] == f"{n}/{n} (100.0%; {n} through an inferred binding, dnpc.binding)"
    assert summary.inferred == {"executor_task": n}
    assert summary.unbound == {} and orphans(out) == {}

    # every binding agrees with the resource monitor's process name in the worker logs (the Parsl task), and
    # a task's tries are its HTEX tasks in the order HTEX numbered them (a retry is submitted after the failure)
    named = monitor_wrapper_tasks(run_dir)
    assert len(named) == n
    by_task: dict[str, list[str]] = {}
    for et in sorted(named, key=lambda e: int(e.split("/")[1])):
        by_task.setdefault(named[et], []).append(et)
    expected = {et: (f"{task}.{i}", "inferred") for task, ets in by_task.items() for i, et in enumerate(ets)}
    assert bound_tries(out) == expected
    assert {t for t, _ in expected.values()} == ran

    with duckdb.connect(str(out), read_only=True) as con:
        (inferred,) = con.execute("""SELECT DISTINCT attributes->>'$."dnpc.inferred"' FROM spans
                                     WHERE context_type = 'executor_task'""").fetchall()
        # the binding's provenance: the worker log line of the execution, the monitoring.db rows in its evidence
        evidence = con.execute("""SELECT source, event_attributes->>'$."dnpc.binding.first_event"' FROM observations
                                  WHERE rule = 'binding:try_by_worker_process'""").fetchall()
    assert inferred[0].startswith("try: the one whose resource samples (monitoring.db) name the worker process")
    assert len(evidence) == n
    assert all(re.fullmatch(r"000/worker_pool/block-0/\w+/worker_\d\.log", s) and e.startswith("monitoring.db:")
               for s, e in evidence)


@pytest.mark.parametrize("name", HTEX_RUNS)
def test_inferred_binding_agrees_with_the_launch_lines(name, tmp_path):
    """The corpus runs with parsl.log, replayed without it: every HTEX task gets the try its launch line names."""
    run_dir = CORPUS / name / "runinfo"
    truth = {k: v for log in run_dir.glob("*/parsl.*log") for k, v in launch_lines(log).items()}
    assert truth
    out = tmp_path / "nolog.duckdb"
    summary = replay(without_parsl_log(run_dir, tmp_path), out)
    got = bound_tries(out)
    assert {et: t for et, (t, _) in got.items()} == truth
    assert {how for _, how in got.values()} == {"inferred"}
    assert summary.inferred == {"executor_task": len(truth)} and orphans(out) == {}


def test_parsl_log_cut_halfway_chains_the_rest_by_inference(tmp_path):
    """parsl.log lost its second half (a full disk): launch lines bind what they name, the binding the rest,
    and what parsl.log lacks is missing_in_source from it."""
    src = CORPUS / "htex-2026" / "runinfo"
    run_dir = tmp_path / "runinfo"
    shutil.copytree(src, run_dir)
    log = run_dir / "000" / "parsl.log"
    lines = log.read_text().splitlines(keepends=True)
    launches = [i for i, line in enumerate(lines) if LAUNCH.search(line.rstrip()) and "worker_pool" in line]
    # cut before the memo check that opens the 17th HTEX launch (it names the try that launch starts)
    cut = max(i for i in range(launches[15], launches[16]) if "will not be memoized" in lines[i])
    log.write_text("".join(lines[:cut]))
    truth = launch_lines(src / "000" / "parsl.log")
    kept = launch_lines(log)
    assert len(kept) == 16 and len(truth) == 31

    out = tmp_path / "cut.duckdb"
    summary = replay(run_dir, out)
    got = bound_tries(out)
    assert {et: t for et, (t, _) in got.items()} == truth
    assert {et for et, (_, how) in got.items() if how is None} == set(kept)
    inferred = len(truth) - len(kept)
    assert summary.lines[LABEL] == f"31/31 (100.0%; {inferred} through an inferred binding, dnpc.binding)"

    # parsl.log describes tries and executor tasks: those it lost are missing from it, and only those
    with duckdb.connect(str(out), read_only=True) as con:
        missing = con.execute("""SELECT context_type, subject, list(context_id ORDER BY context_id)
                                 FROM disagreements WHERE kind = 'missing_in_source' GROUP BY ALL""").fetchall()
    with sqlite3.connect(f"file:{src / 'monitoring.db'}?mode=ro", uri=True) as db:
        tries = {f"{t}.{k}" for t, k in db.execute("SELECT task_id, try_id FROM try")}
    named = {m[1] + "." + m[2] for line in log.read_text().splitlines()
             if (m := re.search(r"Parsl task (\d+) try (\d+) launched on executor", line))}
    assert sorted(missing) == [
        ("executor_task", "parsl_dfk", sorted(set(truth) - set(kept))),
        ("try", "parsl_dfk", sorted(tries - named)),
    ]


# ---------------------------------------------------------------------- fresh runs without parsl.log
@pytest.fixture(scope="module")
def fresh_nolog(tmp_path_factory) -> Path:
    """mixed.py with Config(initialize_logging=False), resource samples every second, no worker_debug."""
    return make_parsl_run(tmp_path_factory.mktemp("nolog"), "--no-parsl-log", workflow="mixed.py")


@pytest.fixture(scope="module")
def fresh_nolog_unsampled(tmp_path_factory) -> Path:
    """The same without resource samples (resource_monitoring_interval=0: no monitor process is forked)."""
    return make_parsl_run(tmp_path_factory.mktemp("nolog0"), "--no-parsl-log", "--resource-interval", "0",
                          workflow="mixed.py")


def test_fresh_run_without_parsl_log_is_chained(fresh_nolog, tmp_path):
    assert not list(fresh_nolog.glob("*/parsl.*log"))
    out = tmp_path / "fresh.duckdb"
    summary = replay(fresh_nolog, out)
    ran = htex_tries_that_ran(fresh_nolog)
    n = len(ran)
    assert n >= 31  # 20 work, 6 flaky (2 retried), 3 shell: every try that reached the pool
    assert summary.lines[LABEL] == f"{n}/{n} (100.0%; {n} through an inferred binding, dnpc.binding)"
    assert summary.inferred == {"executor_task": n} and summary.unbound == {} and orphans(out) == {}
    assert {t for t, _ in bound_tries(out).values()} == ran
    # a check the binding does not use: monitoring.db's try.task_try_time_running, stamped by the worker as the
    # task starts, lies inside the execution of the HTEX task the try was bound to
    with duckdb.connect(str(out), read_only=True) as con:
        outside = con.execute("""
            WITH running AS (
                SELECT trace_id, span_id, min(time_unix_nano) AS t FROM observations
                WHERE converter = 'monitoring_db' AND rule = 'try' AND event = 'running' GROUP BY ALL
            ), execution AS (
                SELECT w.trace_id, w.parent_span_id AS et, min(o.time_unix_nano) AS lo, max(o.time_unix_nano) AS hi
                FROM spans w JOIN observations o USING (trace_id, span_id)
                WHERE w.context_type = 'worker_execution' AND o.converter = 'htex_worker' GROUP BY ALL
            )
            SELECT e.attributes->>'$."dnpc.context_id"' FROM spans e
            JOIN running r ON r.trace_id = e.trace_id AND r.span_id = e.parent_span_id
            JOIN execution w ON w.trace_id = e.trace_id AND w.et = e.span_id
            WHERE e.context_type = 'executor_task' AND NOT r.t BETWEEN w.lo AND w.hi""").fetchall()
        checked = con.execute("SELECT count(*) FROM spans WHERE context_type = 'executor_task'").fetchone()[0]
    assert outside == [] and checked == n


def test_fresh_run_without_parsl_log_or_samples_says_what_is_unbound(fresh_nolog_unsampled, tmp_path):
    out = tmp_path / "fresh0.duckdb"
    summary = replay(fresh_nolog_unsampled, out)
    n = len(htex_tries_that_ran(fresh_nolog_unsampled))
    assert n >= 31
    assert summary.lines[LABEL] == (
        f"0/{n} (0.0%; {n} not bound to their HTEX task: no parsl.log to name it, and no resource sample in "
        "monitoring.db ties it one to one to the worker process that ran it)")
    # the executor tasks hang under the workflow, and the summary says so: no orphan beyond those
    assert summary.inferred == {} and summary.unbound == {"executor_task": (n, 0)}
    assert orphans(out) == {"executor_task": n}
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(fresh_nolog_unsampled),
                           "--duckdb", str(tmp_path / "cli.duckdb")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"not bound to a parent (dnpc.orphan): executor_task {n} (no source names their try)" in proc.stdout
    assert f"{LABEL}: 0/{n} (0.0%; {n} not bound to their HTEX task" in proc.stdout


# ---------------------------------------------------------------------- expected sources
def test_no_missing_in_source_for_executors_without_blocks(tmp_path):
    """monitoring.db knows executors by their blocks: a thread pool is never missing from it."""
    checked = 0
    for i, run_dir in enumerate(corpus_runs()):
        out = tmp_path / f"{i}.duckdb"
        replay(run_dir, out)
        with duckdb.connect(str(out), read_only=True) as con:
            blockless = {cid for (cid,) in con.execute("""
                SELECT e.attributes->>'$."dnpc.context_id"' FROM spans e WHERE e.context_type = 'executor'
                AND NOT EXISTS (SELECT 1 FROM spans b WHERE b.trace_id = e.trace_id AND b.parent_span_id = e.span_id
                                AND b.context_type = 'block')""").fetchall()}
            reported = {cid for (cid,) in con.execute("""SELECT context_id FROM disagreements
                        WHERE kind = 'missing_in_source' AND context_type = 'executor'""").fetchall()}
            uses_db = con.execute("SELECT count(*) FROM observations WHERE converter = 'monitoring_db' "
                                  "AND context_type = 'executor'").fetchone()[0]
        assert not blockless & reported, run_dir
        if list(run_dir.glob("*/parsl.*log")):  # mixed.py's thread pool 'threads' is named by the DFK's log
            assert uses_db and "threads" in blockless, run_dir
            checked += 1
    assert checked


# ---------------------------------------------------------------------- the policies, on hand-made rows
T0 = 1_700_000_000 * 10**9
MS = 10**6
SYSTEM = System(root_context="workflow", reference_clock="dfk", run_id_attribute="parsl.run_id")
TYPES = {t.name: t for t in (
    ContextType("workflow", "workflow", covers_children=True),
    ContextType("task", "task", parents=("workflow",)),
    ContextType("try", "try", parents=("task",)),
    ContextType("executor", "executor", parents=("workflow",)),
    ContextType("block", "block", parents=("executor",)),
    ContextType("executor_task", "executor_task", parents=("try",)),
    ContextType("worker_execution", "worker_execution", parents=("executor_task",)),
)}
BINDING = Binding(name="by_pid", source="wlog", priority=30, context="executor_task", parent="try",
                  through="worker_execution", match={"process.pid": "process.pid"}, events=("resource",),
                  inferred="try: by pid and time")


def row(ctype: str, cid: str, event: str | None = None, t: int | None = None, *, converter: str = "log",
        attributes: dict | None = None, event_attributes: dict | None = None, parent: tuple[str, str] | None = None):
    return {
        "run_key": "r1", "context_type": ctype, "context_id": cid, "event": event, "time_ns": t, "local_ns": None,
        "clock": "dfk", "bounds": True, "attributes": json.dumps(attributes or {}),
        "event_attributes": json.dumps(event_attributes or {}), "relation": "child_of" if parent else None,
        "related_type": parent[0] if parent else None, "related_id": parent[1] if parent else None,
        "source": converter + ".log", "line": 1, "converter": converter, "rule": "r", "priority": 20,
    }


def execution(htex: str, pid: int, lo_ms: int, hi_ms: int) -> list[dict]:
    w = f"{htex}@w"
    return [row("worker_execution", w, "received", T0 + lo_ms * MS, converter="wlog", attributes={"process.pid": pid},
                parent=("executor_task", htex)),
            row("worker_execution", w, "completed", T0 + hi_ms * MS, converter="wlog")]


def sample(try_id: str, pid: int, at_ms: int) -> dict:
    return row("try", try_id, "resource", T0 + at_ms * MS, converter="db", event_attributes={"process.pid": pid})


def reconciled(rows: list[dict], definitions: tuple[Definition, ...]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_stage(con, OBSERVED)
    cols = OBSERVATIONS.column_names
    con.executemany(f"INSERT INTO {OBSERVED}.observations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [tuple(r[c] for c in cols) for r in rows])
    base = Definition("types", "", "test", 20, Path("types.toml"), (), contexts=TYPES)
    everything = (base, *definitions)
    reconcile(con, Catalog(everything, SYSTEM, context_types(list(everything))), None, "/data/runinfo")
    return con


def parents_of(con: duckdb.DuckDBPyConnection, ctype: str) -> dict[str, str | None]:
    return dict(con.execute(f"""
        SELECT c.attributes->>'$."dnpc.context_id"', p.attributes->>'$."dnpc.context_id"'
        FROM reconciled.spans c JOIN reconciled.spans p ON p.span_id = c.parent_span_id AND p.context_type = 'try'
        WHERE c.context_type = '{ctype}'""").fetchall())


def test_binding_is_one_to_one_or_nothing():
    wlog = Definition("wlog", "", "test", 30, Path("wlog.toml"), (), bindings=(BINDING,))
    rows = [
        # a clean match: pid 7 ran executor task 1 from 0 to 10 ms; try 1.0's samples at 2 and 8 ms name pid 7
        *execution("1", 7, 0, 10), sample("1.0", 7, 2), sample("1.0", 7, 8),
        # pid 8 on two hosts at once (windows of equal values overlap): its sample cannot tell them apart
        *execution("2", 8, 0, 10), *execution("3", 8, 5, 15), sample("2.0", 8, 7),
        # try 4.0's samples fall in two executions of pid 9: it matches two executor tasks
        *execution("4", 9, 0, 10), *execution("5", 9, 20, 30), sample("4.0", 9, 5), sample("4.0", 9, 25),
        # a sample of try 6.0 outside every window of its pid: not every sample is explained
        *execution("6", 10, 0, 10), sample("6.0", 10, 5), sample("6.0", 10, 50),
        # executor task 7 is bound by a record already: the evidence for another try does not compete
        *execution("7", 11, 0, 10), sample("7.1", 11, 5),
        row("executor_task", "7", "launched", T0, parent=("try", "7.0")), row("try", "7.0", "launched", T0),
    ]
    con = reconciled(rows, (wlog,))
    assert parents_of(con, "executor_task") == {"1": "1.0", "7": "7.0"}
    (attrs,) = con.execute("""SELECT attributes FROM reconciled.spans WHERE context_type = 'executor_task'
                              AND attributes->>'$."dnpc.context_id"' = '1'""").fetchone()
    assert json.loads(attrs)["dnpc.binding"] == "inferred" and json.loads(attrs)["dnpc.inferred"] == BINDING.inferred
    orphaned = con.execute("""SELECT attributes->>'$."dnpc.context_id"' FROM reconciled.spans
                              WHERE context_type = 'executor_task' AND (attributes->>'$."dnpc.orphan"')::BOOLEAN
                           """).fetchall()
    assert sorted(o for (o,) in orphaned) == ["2", "3", "4", "5", "6"]


def test_expected_sources_having_and_not_expected():
    db = Definition("db", "", "test", 10, Path("db.toml"), (),
                    describes=(Expectation("db", "executor", having=("block",)),))
    quiet = Definition("quiet", "", "test", 40, Path("quiet.toml"), (),
                       describes=(Expectation("quiet", "executor", expected=False),))
    rows = [
        row("executor", "htex", "added", T0), row("executor", "threads", "added", T0),
        row("executor", "wq", "added", T0),
        # the database knows htex by its block; the log says wq has a block too, which the database lacks
        row("block", "htex/0", "launched", T0, converter="db", parent=("executor", "htex")),
        row("executor", "htex", None, None, converter="db"),
        row("block", "wq/0", "launched", T0, parent=("executor", "wq")),
        row("block", "htex/0", "launched", T0, parent=("executor", "htex")),
        # an incidental source names one executor only
        row("executor", "htex", "stopped", T0 + MS, converter="quiet"),
    ]
    con = reconciled(rows, (db, quiet))
    missing = con.execute("""SELECT context_type, context_id, subject FROM reconciled.disagreements
                             WHERE kind = 'missing_in_source' ORDER BY ALL""").fetchall()
    # block wq/0 is missing from db too: blocks have no declaration, so db describes all of them
    assert missing == [("block", "wq/0", "db"), ("executor", "wq", "db")]


# ---------------------------------------------------------------------- the declarations, checked on loading
BUILTIN = Path(__file__).resolve().parent.parent / "converters"


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    ("monitoring_db.toml", 'having = ["block"]', 'having = ["blok"]',
     "describes executor: key 'having': unknown context type 'blok' (did you mean 'block'?)"),
    ("monitoring_db.toml", 'having = ["block"]', 'having = ["manager"]',
     "describes executor: key 'having': manager is not a child type of executor (its parents: ['block'])"),
    ("monitoring_db.toml", 'having = ["block"]', 'havin = ["block"]',
     "describes executor: unknown key 'havin' (did you mean 'having'?)"),
    ("monitoring_db.toml", "[describes.executor]", "[describes.executr]",
     "describes executr: key 'describes': unknown context type 'executr' (did you mean 'executor'?)"),
    ("htex_worker.toml", 'parent = "try"\nthrough', 'parent = "task"\nthrough',
     "binding try_by_worker_process: key 'parent': task is not one of the parents of executor_task (['try'])"),
    ("htex_worker.toml", 'through = "worker_execution"', 'through = "worker"',
     "binding try_by_worker_process: key 'through': worker is not a child type of executor_task"),
    ("htex_worker.toml", 'match = { "process.pid"', 'mtach = { "process.pid"',
     "binding try_by_worker_process: unknown key 'mtach' (did you mean 'match'?)"),
    ("htex_worker.toml", 'events = ["resource"]', "events = []",
     "binding try_by_worker_process: key 'events' must not be empty"),
])
def test_a_bad_declaration_is_one_clear_error(tmp_path, name, old, new, expected):
    text = (BUILTIN / name).read_text(encoding="utf-8")
    assert text.count(old) == 1
    path = tmp_path / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(DefinitionError) as e:
        load_catalog([tmp_path])
    assert str(e.value) == f"{path}: {expected}"
