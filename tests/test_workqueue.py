"""Work Queue and TaskVine: manager, worker and task contexts from cctools logs (issue #6).

Work Queue is tested on real runs: the corpus run wq-2026 (Parsl 2026.10.26, Debian cctools 9.9) and a
fresh run made now by the corpus tools (tests/tools/make_run.sh 2026.10.26 DIR --executor wq, which installs
Debian's cctools with apt-get when they are missing).

TaskVine is tested on sample logs only: no TaskVine build exists here (Debian's coop-computing-tools 9.9
has Work Queue but no TaskVine, and TaskVine's Python package ndcctools is published on conda-forge, not on
PyPI), so the logs under tests/data/taskvine/ were written by hand (one-off generator, not kept) from the
sources: cctools vine_txn_log.c and vine_runtime_dir.c at
releases 7.6.1 and 7.9, doc/manuals/taskvine (log-file-formats.md), vine_worker.c's stdout messages, and
Parsl's TaskVine executor and DataFlowKernel log messages at 2023.07.31 and 2026.07. Two layouts:
  parsl-2023.07.31/  cctools 7.6 (WAITING with attempt numbers); the vine logs inside the run directory
                     (runinfo/000/<label>/<stamp>/vine-logs/, Parsl 2023.06.12 – 2023.07.31); the submit
                     process still logs 'Executor task N submitted as TaskVine task with id M'; the worker
                     runs in a LocalProvider block whose stdout names its address.
  parsl-2026.10.26/  cctools 7.9 (READY); the vine logs beside the runs (runinfo/<label>/<stamp>/, Parsl
                     2023.08.07+), no submit-process lines (spawned without logging since 2025.03.31), so
                     the task binding is inferred; factory workers, no block.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, TOOLS, copy_run
from verify import check_replay_against_monitoring, db_rows

from dnpc2otel import replay

WQ_CORPUS = CORPUS / "wq-2026" / "runinfo"
VINE_DATA = Path(__file__).resolve().parent / "data" / "taskvine"
VINE_OLD = VINE_DATA / "parsl-2023.07.31" / "runinfo"
VINE_NEW = VINE_DATA / "parsl-2026.10.26" / "runinfo"
# nesting in time (cctools task ⊂ executor task ⊂ try) compares events that follow one another causally, from
# different files: slack for the debug log's centiseconds, not for two stamps of one moment (those are
# checked source-exactly by check_replay_against_monitoring, and compared in the disagreements table)
TOLERANCE_NS = 5_000_000


def _cannot(reason: str):
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# ---------------------------------------------------------------------- reading the replay back
class Trace:
    """The spans, links and events of a one-run replay, by context."""

    def __init__(self, duck: Path):
        con = duckdb.connect(str(duck), read_only=True)
        try:
            cols = ["trace_id", "span_id", "parent_span_id", "name", "context_type", "start", "end", "status_code",
                    "attributes"]
            rows = con.execute(
                """SELECT trace_id, span_id, parent_span_id, name, context_type, start_time_unix_nano,
                          end_time_unix_nano, status_code, attributes FROM spans""").fetchall()
            links = con.execute(
                """SELECT span_id, linked_span_id, json_extract_string(attributes, '$."dnpc.relation"')
                   FROM span_links""").fetchall()
            events = con.execute(
                "SELECT span_id, name, time_unix_nano, attributes FROM span_events ORDER BY time_unix_nano").fetchall()
        finally:
            con.close()
        assert len({r[0] for r in rows}) == 1, "one run, one trace"
        self.by_key: dict[tuple[str, str], dict] = {}
        self.by_span: dict[str, dict] = {}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            s = dict(zip(cols, r, strict=True))
            s["attributes"] = json.loads(s["attributes"])
            s["id"] = s["attributes"]["dnpc.context_id"]
            self.by_key[(s["context_type"], s["id"])] = s
            self.by_span[s["span_id"]] = s
            if s["parent_span_id"]:
                self.children[s["parent_span_id"]].append(s)
        self.links: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for span, linked, relation in links:
            self.links[span].add((relation, linked))
        self.events: dict[str, list[tuple[str, int, dict]]] = defaultdict(list)
        for span, name, t, attrs in events:
            self.events[span].append((name, t, json.loads(attrs)))

    def of_type(self, ctype: str) -> list[dict]:
        return [s for (t, _), s in self.by_key.items() if t == ctype]

    def parent(self, span: dict) -> dict | None:
        return self.by_span.get(span["parent_span_id"] or "")

    def kids(self, span: dict, ctype: str) -> list[dict]:
        return [c for c in self.children[span["span_id"]] if c["context_type"] == ctype]

    def event_names(self, span: dict) -> list[str]:
        return [name for name, _, _ in self.events[span["span_id"]]]


def _within(inner: dict, outer: dict) -> bool:
    return inner["start"] >= outer["start"] - TOLERANCE_NS and inner["end"] <= outer["end"] + TOLERANCE_NS


def check_cctools_chain(trace: Trace, system: str, label: str, tries: set[tuple[int, int]],
                        bindings: set[str], worker_parent: str) -> dict:
    """The issue's criteria for every try that ran on the cctools executor `label`.

    try › executor_task › <system>_task, the task's worker as an attribute and an also_child_of link to
    the <system>_worker span, the result as attributes, failures as status; workers under `worker_parent`,
    the manager under the executor.
    """
    task_t, worker_t, manager_t = f"{system}_task", f"{system}_worker", f"{system}_manager"
    found = {}
    failed_tries = 0
    for key in sorted(tries):
        span_try = trace.by_key[("try", f"{key[0]}.{key[1]}")]
        exec_tasks = trace.kids(span_try, "executor_task")
        assert len(exec_tasks) == 1, f"try {key}: executor tasks {[e['id'] for e in exec_tasks]}"
        et = exec_tasks[0]
        exec_id = et["attributes"]["parsl.executor.task_id"]
        assert et["id"] == f"{label}/{exec_id}"
        assert span_try["attributes"]["parsl.executor.task_id"] == exec_id
        cc_tasks = trace.kids(et, task_t)
        assert len(cc_tasks) == 1, f"try {key} / executor task {exec_id}: {task_t} {[c['id'] for c in cc_tasks]}"
        ct = cc_tasks[0]
        a = ct["attributes"]
        assert a["dnpc.binding"] in bindings, (ct["id"], a["dnpc.binding"])
        assert a["parsl.executor.task_id"] == exec_id
        # the worker it ran on: attribute, and the second parent in the resource hierarchy
        worker = trace.by_key[(worker_t, f"{label}/{a['cctools.worker.address']}")]
        linked = ("also_child_of", worker["span_id"]) in trace.links[ct["span_id"]]
        assert linked, f"{ct['id']} not linked to its worker"
        assert worker["attributes"]["cctools.worker.id"] == a["cctools.worker.id"]
        # its result, as the cctools manager saw it
        assert a["cctools.task.result"] == "SUCCESS" and a["cctools.task.exit_code"] == 0, (ct["id"], a)
        assert ct["status_code"] != "ERROR"
        names = trace.event_names(ct)
        assert {"RUNNING", "WAITING_RETRIEVAL", "RETRIEVED", "DONE"} <= set(names), (ct["id"], names)
        assert names.count("RUNNING") >= 1
        # nesting in time: the cctools task inside the executor task inside the try
        assert _within(ct, et), (ct["id"], "outside its executor task")
        assert _within(et, span_try), (et["id"], "outside its try")
        # a failed try (the app raised): the executor task failed too; cctools reports SUCCESS / 0
        if span_try["status_code"] == "ERROR":
            failed_tries += 1
            assert et["status_code"] == "ERROR", f"executor task of failed try {key} not marked"
        else:
            assert et["status_code"] != "ERROR", f"executor task of try {key} wrongly marked"
        found[key] = {"exec_id": exec_id, "task": ct, "worker": worker}
    # managers and workers
    manager = trace.by_key[(manager_t, label)]
    assert trace.parent(manager)["id"] == label and trace.parent(manager)["context_type"] == "executor"
    assert {"START", "END"} <= set(trace.event_names(manager))
    workers = trace.of_type(worker_t)
    for w in workers:
        assert trace.parent(w)["context_type"] == worker_parent, (w["id"], trace.parent(w)["context_type"])
        assert {"CONNECTION", "DISCONNECTION"} <= set(trace.event_names(w))
        if worker_parent == "block":  # the manager stays a second parent
            assert ("also_child_of", manager["span_id"]) in trace.links[w["span_id"]]
    return {"tries": len(found), "failed_tries": failed_tries, "workers": len(workers),
            "cctools_tasks": len(trace.of_type(task_t)), "found": found}


# ---------------------------------------------------------------------- Work Queue
def wq_tries(monitoring_db: Path, label: str = "worker_pool") -> set[tuple[int, int]]:
    rows = db_rows(monitoring_db, "SELECT task_id, try_id FROM try WHERE task_executor = ? "
                                  "AND task_try_time_launched IS NOT NULL", (label,))
    return {(t, y) for t, y in rows}


def wq_log_facts(wq_dir: Path) -> dict:
    """What the cctools logs say, read independently of the converters (plain Python)."""
    bound: dict[int, int] = {}  # wq task → executor id, from the debug log
    pending: dict[str, int] = {}  # worker address → function_data number awaiting its 'task M' line
    for line in (wq_dir / "debug_log").read_text().splitlines():
        m = re.search(r"wq: \S+ \(([^)]+)\) needs file .*/function_data/(\d+)/function ", line)
        if m:
            pending[m.group(1)] = int(m.group(2))
            continue
        m = re.search(r"wq: tx to \S+ \(([^)]+)\): task (\d+)$", line)
        if m and m.group(1) in pending:
            bound[int(m.group(2))] = pending.pop(m.group(1))
    running: dict[int, str] = {}
    done: dict[int, tuple[str, int]] = {}
    forsaken: set[int] = set()
    for line in (wq_dir / "transaction_log").read_text().splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[2] == "TASK":
            if parts[4] == "RUNNING":
                running[int(parts[3])] = parts[5]
            elif parts[4] == "DONE":
                done[int(parts[3])] = (parts[5], int(parts[6]))
    for line in (wq_dir / "debug_log").read_text().splitlines():
        m = re.search(r"\): result 40 \S+ \S+ \S+ (\d+)$", line)
        if m:
            forsaken.add(int(m.group(1)))
    logged: dict[int, int] = {}  # parsl.log, 2023.03.27 – 2025.03.24 only
    for line in (wq_dir.parent / "parsl.log").read_text().splitlines():
        m = re.search(r": Executor task (\d+) submitted as Work Queue task (\d+)$", line)
        if m:
            logged[int(m.group(2))] = int(m.group(1))
    return {"bound": bound, "logged": logged, "running": running, "done": done, "forsaken": forsaken}


def check_wq_run(run_dir: Path, duck: Path) -> dict:
    trace = Trace(duck)
    tries = wq_tries(run_dir / "monitoring.db")
    stats = check_cctools_chain(trace, "wq", "worker_pool", tries, {"debug_log", "parsl.log"}, "block")
    facts = wq_log_facts(run_dir / "000" / "worker_pool")
    # every Work Queue task is some try's; the binding is the one the debug log states
    assert stats["cctools_tasks"] == len(tries) == len(facts["done"])
    # parsl.log, where it logs the binding, agrees with the debug log
    assert all(facts["bound"][wq_id] == exec_id for wq_id, exec_id in facts["logged"].items())
    for info in stats["found"].values():
        wq_id = int(info["task"]["id"].split("/")[1])
        assert facts["bound"][wq_id] == int(info["exec_id"]), wq_id
        # the latest statement names its source: the Completed line of parsl.log when there is one
        expected = "parsl.log" if facts["logged"] else "debug_log"
        assert info["task"]["attributes"]["dnpc.binding"] == expected, (wq_id, info["task"]["attributes"])
        assert info["task"]["attributes"]["cctools.worker.address"] == facts["running"][wq_id]
        assert (info["task"]["attributes"]["cctools.task.result"],
                info["task"]["attributes"]["cctools.task.exit_code"]) == facts["done"][wq_id]
    # a task the worker gave back (FORSAKEN) shows both attempts
    for wq_id in facts["forsaken"]:
        span = trace.by_key[("wq_task", f"worker_pool/{wq_id}")]
        names = trace.event_names(span)
        assert names.count("RUNNING") == 2 and names.count("WAITING") == 2, (wq_id, names)
        results = [e[2]["cctools.task.result"] for e in trace.events[span["span_id"]] if e[0] == "worker_result"]
        assert results == ["FORSAKEN", "SUCCESS"], (wq_id, results)
    # the worker: host name, id and resources from the logs, bound to block 0 by its stdout
    for w in trace.of_type("wq_worker"):
        assert w["attributes"]["host.name"] and w["attributes"]["cctools.worker.cores"] > 0
        assert trace.parent(w)["id"] == "worker_pool/0"
    stats["forsaken"] = len(facts["forsaken"])
    stats["logged_bindings"] = len(facts["logged"])
    return stats


@pytest.fixture(scope="module")
def wq_corpus() -> Path:
    if not WQ_CORPUS.is_dir():
        _cannot(f"the Work Queue corpus run is missing at {WQ_CORPUS}")
    return WQ_CORPUS


def test_corpus_wq_chain(wq_corpus, tmp_path):
    out = tmp_path / "wq.duckdb"
    summary = replay(wq_corpus, out)
    assert summary.lines_not_understood == 0
    counts = check_replay_against_monitoring(out, wq_corpus / "monitoring.db", times="monitoring.db")
    assert counts["tasks"] == 31 and counts["tries"] == 33
    stats = check_wq_run(wq_corpus, out)
    # 26 work/flaky/shell tasks on Work Queue + 2 retries of flaky tasks; combine ran on the thread pool
    # and the second combine never launched (dependency failure)
    assert stats["tries"] == 31 and stats["cctools_tasks"] == 31
    assert stats["failed_tries"] == 4  # two flaky tasks, each failing twice (try 0 and its retry)
    assert stats["workers"] == 1
    assert stats["forsaken"] == 1  # Work Queue task 30 (task 23's retry) was forsaken once, then ran
    trace = Trace(out)
    failed = trace.by_key[("executor_task", "worker_pool/29")]
    assert failed["attributes"]["exception.type"] == "ValueError"
    assert trace.parent(trace.parent(failed))["id"] == "23"  # task 23, try 1


def test_corpus_wq_from_logs_alone(wq_corpus, tmp_path):
    """Without monitoring.db the chain is the same: it comes from parsl.log and the cctools logs."""
    logs = copy_run(wq_corpus, tmp_path, without_db=True)
    out = tmp_path / "logs.duckdb"
    replay(logs, out)
    stats = check_wq_run(wq_corpus, out)
    assert stats["tries"] == 31
    assert check_replay_against_monitoring(out, wq_corpus / "monitoring.db", times="parsl.log")["timed_tries"] == 33


def test_corpus_wq_without_debug_log(wq_corpus, tmp_path):
    """The debug log is the only source binding Work Queue tasks to executor tasks in Parsl 2026: without
    it nothing is guessed (ids are not matched by arithmetic); each task hangs under the worker it ran on."""
    logs = copy_run(wq_corpus, tmp_path)
    (logs / "000" / "worker_pool" / "debug_log").unlink()
    out = tmp_path / "nodebug.duckdb"
    replay(logs, out)
    trace = Trace(out)
    tasks = trace.of_type("wq_task")
    assert len(tasks) == 31
    for t in tasks:
        assert "dnpc.binding" not in t["attributes"]
        assert trace.parent(t)["context_type"] == "wq_worker"


def _can_make_wq_runs() -> None:
    if not (TOOLS / "make_run.sh").is_file():
        _cannot(f"the corpus tools are not at {TOOLS}")
    if shutil.which("bash") is None or not Path("/usr/bin/python3").exists():
        _cannot("make_run.sh needs bash and Debian's /usr/bin/python3")
    probe = subprocess.run(["/usr/bin/python3", "-c", "import work_queue"], capture_output=True)
    if probe.returncode == 0:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        _cannot("Debian's cctools (python3-workqueue) are not installed and cannot be installed here "
                "(apt-get as root is needed)")
    # make_run.sh installs coop-computing-tools / python3-workqueue; apt may need fresh lists for that
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)


# 2026.10.26: the submit process does not log into parsl.log (the debug log binds the tasks);
# 2024.3.4: it logs 'Executor task N submitted as Work Queue task M' and 'Completed Work Queue task …'
@pytest.fixture(scope="module", params=["2026.10.26", "2024.3.4"])
def fresh_wq(request, tmp_path_factory) -> tuple[str, Path]:
    """A real WorkQueueExecutor run with monitoring, made now with the corpus tools (mixed.py)."""
    _can_make_wq_runs()
    release = request.param
    run_dir = tmp_path_factory.mktemp(f"wq-{release}") / "runinfo"
    try:
        proc = subprocess.run(["bash", str(TOOLS / "make_run.sh"), release, str(run_dir), "--executor", "wq"],
                              capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        _cannot(f"make_run.sh {release} --executor wq did not finish in 20 minutes")
    if proc.returncode != 0 or not (run_dir / "000" / "worker_pool" / "transaction_log").is_file():
        _cannot(f"make_run.sh {release} --executor wq failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                f"{proc.stderr[-3000:]}")
    return release, run_dir


def test_fresh_wq_run(fresh_wq, tmp_path):
    release, run_dir = fresh_wq
    out = tmp_path / "fresh.duckdb"
    summary = replay(run_dir, out)
    assert summary.lines_not_understood == 0
    counts = check_replay_against_monitoring(out, run_dir / "monitoring.db", times="monitoring.db")
    assert counts["tasks"] == 31 and counts["tries"] == 33
    stats = check_wq_run(run_dir, out)
    assert stats["tries"] == 31 and stats["failed_tries"] == 4 and stats["workers"] >= 1
    assert stats["logged_bindings"] == (31 if release == "2024.3.4" else 0)
    # from the logs alone: the same chain, the tries timed by parsl.log's own lines (not by monitoring.db's
    # stamps of the same moments, which a busy machine puts some ms apart)
    logs = copy_run(run_dir, tmp_path, without_db=True)
    replay(logs, tmp_path / "logs.duckdb")
    counts = check_replay_against_monitoring(tmp_path / "logs.duckdb", run_dir / "monitoring.db", times="parsl.log")
    assert counts["tries"] == 33 and counts["timed_tries"] == 33
    assert check_wq_run(run_dir, tmp_path / "logs.duckdb")["tries"] == 31


# ---------------------------------------------------------------------- TaskVine (sample logs)
VINE_TRIES = {(0, 0), (1, 0), (2, 0), (2, 1), (3, 0)}


def _vine_failures(trace: Trace) -> None:
    # task 2 (flaky 3) raised twice: both tries, their executor tasks and the task are ERROR; TaskVine's own
    # view of those tasks is SUCCESS / 0 (the exception travels in the result file)
    for key in ((2, 0), (2, 1)):
        assert trace.by_key[("try", f"{key[0]}.{key[1]}")]["status_code"] == "ERROR"
    assert trace.by_key[("task", "2")]["status_code"] == "ERROR"
    for tid in ("0", "1", "3"):
        assert trace.by_key[("task", tid)]["status_code"] != "ERROR"


def test_taskvine_logs_inside_the_run(tmp_path):
    """Parsl 2023.07.31 + cctools 7.6: bindings logged in parsl.log, worker bound to its block."""
    out = tmp_path / "vine-old.duckdb"
    summary = replay(VINE_OLD, out)
    assert summary.lines_not_understood == 0
    trace = Trace(out)
    stats = check_cctools_chain(trace, "vine", "taskvine", VINE_TRIES, {"parsl.log"}, "block")
    assert stats["tries"] == 5 and stats["cctools_tasks"] == 5 and stats["failed_tries"] == 2
    assert {k: v["task"]["id"] for k, v in stats["found"].items()} == {
        (0, 0): "taskvine/1", (1, 0): "taskvine/2", (2, 0): "taskvine/3", (3, 0): "taskvine/4", (2, 1): "taskvine/5"}
    _vine_failures(trace)
    # TaskVine task 4 went back to the ready queue once: two WAITING (attempts 1 and 2) and two RUNNING
    span = stats["found"][(3, 0)]["task"]
    attempts = [e[2].get("cctools.task.attempt") for e in trace.events[span["span_id"]] if e[0] == "WAITING"]
    assert attempts == [1, 2] and trace.event_names(span).count("RUNNING") == 2
    worker = trace.of_type("vine_worker")[0]
    assert trace.parent(worker)["id"] == "taskvine/0" and worker["attributes"]["cctools.worker.cores"] == 2


def test_taskvine_logs_beside_the_runs_inferred_binding(tmp_path):
    """Parsl 2026 + cctools 7.9, its vine logs placed where a run-aware core would attribute them (under
    runinfo/000/): nothing logs the binding, it is inferred from the order of READY records."""
    run_dir = tmp_path / "runinfo"
    shutil.copytree(VINE_NEW, run_dir, symlinks=True)
    (run_dir / "vine_pool").rename(run_dir / "000" / "vine_pool")
    out = tmp_path / "vine-new.duckdb"
    summary = replay(run_dir, out)
    assert summary.lines_not_understood == 0
    trace = Trace(out)
    stats = check_cctools_chain(trace, "vine", "vine_pool", VINE_TRIES, {"inferred"}, "vine_manager")
    assert stats["tries"] == 5 and stats["failed_tries"] == 2
    assert {k: v["exec_id"] for k, v in stats["found"].items()} == {
        (0, 0): "0", (1, 0): "1", (2, 0): "2", (3, 0): "3", (2, 1): "4"}
    _vine_failures(trace)


def test_taskvine_logs_beside_the_runs_as_written(tmp_path):
    """TaskVine's logs sit beside the runs (runinfo/<label>/<stamp>/vine-logs, Parsl 2023.08.07+) and
    name no run: the core ties them to the run whose time window holds them, also when one run is chosen."""
    out = tmp_path / "vine-shared.duckdb"
    replay(VINE_NEW, out)
    trace = Trace(out)
    check_cctools_chain(trace, "vine", "vine_pool", VINE_TRIES, {"inferred"}, "vine_manager")
    # replaying only run 000 still reads the shared logs and ties them to it
    one = tmp_path / "vine-one.duckdb"
    replay(VINE_NEW / "000", one)
    check_cctools_chain(Trace(one), "vine", "vine_pool", VINE_TRIES, {"inferred"}, "vine_manager")
