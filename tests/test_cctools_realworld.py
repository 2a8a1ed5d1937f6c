"""Real Work Queue and TaskVine transactions logs (tests/data/realworld/cctools-and-db, see its README: cctools
7.5 dev of January 2023 to TaskVine of 2025) convert fully: ≥ 95% of each file's records used, one span per
(manager session, task), the workers of every log that names them.

What each log holds is counted here by plain regular expressions over the raw file, independently of the
converters. A manager session is the manager's pid (second field of every line) plus which of that pid's
MANAGER START records it follows, as converters/workqueue_transactions.toml defines it.

The multi-session inputs are synthetic concatenations of real logs: every line is a real line of the file
named, only the pid and the time stamps of the appended sessions are changed (as a second and third manager
appending to the same transaction_log, Work Queue's "a" mode, would write them).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, REPO

from dnpc2otel import replay

CCTOOLS = REPO / "tests" / "data" / "realworld" / "cctools-and-db"
LOGS = {  # directory → (system, the transactions log relative to runinfo/)
    "wq-colmena-2023": ("wq", "000/WorkQueueExecutor/transaction_log"),
    "vine-blast50-2023-01": ("vine", "000/TaskVineExecutor/2023-01-01T000000/vine-logs/transactions"),
    "vine-all400-2023-02": ("vine", "000/TaskVineExecutor/2023-01-01T000000/vine-logs/transactions"),
    "vine-lnni-2025": ("vine", "000/TaskVineExecutor/2025-03-17T222521/vine-logs/transactions"),
}
# what the README says each log holds
EXPECTED = {
    "wq-colmena-2023": {"tasks": 1228, "workers": 102},
    "vine-blast50-2023-01": {"tasks": 100, "workers": 50},
    "vine-all400-2023-02": {"tasks": 1000, "workers": 402},
    "vine-lnni-2025": {"tasks": 1500 + 366, "workers": 183},  # 1500 READY tasks and 366 library instances
}

RECORD = re.compile(r"^(\d{10,}) (\d+) (.*?)\s*$")
START = re.compile(r"^MANAGER (?:\d+ )?START\b")
TASK_ID = re.compile(r"^(?:TASK (\d+) |LIBRARY (-?\d+) |TRANSFER (?:INPUT|OUTPUT) (\d+) )")
CONNECTION = re.compile(r"^WORKER (\S+) (?:CONNECTION (\S+)|(\S+)\s+CONNECTION)$")


def read_log(path: Path) -> list[tuple[tuple[str, int], str]]:
    """(session, record) per record line: session = (pid, k), the pid's k-th MANAGER START (k ≥ 1)."""
    starts: Counter[str] = Counter()
    out = []
    for line in path.read_text().splitlines():
        m = RECORD.match(line)
        if not m:
            continue
        pid, text = m.group(2), m.group(3)
        if START.match(text):
            starts[pid] += 1
        out.append(((pid, max(starts[pid], 1)), text))
    return out


def log_facts(path: Path) -> dict:
    records = read_log(path)
    tasks, workers = set(), set()
    for session, text in records:
        m = TASK_ID.match(text)
        if m:
            tasks.add((session, next(g for g in m.groups() if g is not None)))
        m = CONNECTION.match(text)
        if m:
            workers.add((session, m.group(2) or m.group(3)))
    return {"sessions": {s for s, _ in records}, "tasks": tasks, "workers": workers, "records": records}


class Replay:
    def __init__(self, duck: Path):
        con = duckdb.connect(str(duck), read_only=True)
        try:
            self.sources = {s: (n, used) for s, n, used in con.execute(
                "SELECT source, records, records_used FROM sources").fetchall()}
            self.spans = [
                {"span_id": sid, "parent": parent, "type": ctype, "status": status, "start": start, "end": end,
                 "attributes": json.loads(attrs)}
                for sid, parent, ctype, status, start, end, attrs in con.execute(
                    """SELECT span_id, parent_span_id, context_type, status_code, start_time_unix_nano,
                              end_time_unix_nano, attributes FROM spans""").fetchall()]
            self.links = con.execute("SELECT span_id, linked_span_id FROM span_links").fetchall()
            self.events: dict[str, list[tuple[str, dict]]] = defaultdict(list)
            for sid, name, attrs in con.execute(
                    "SELECT span_id, name, attributes FROM span_events ORDER BY time_unix_nano").fetchall():
                self.events[sid].append((name, json.loads(attrs)))
            self.disagreements = Counter(k for (k,) in con.execute("SELECT kind FROM disagreements").fetchall())
        finally:
            con.close()
        self.by_id = {s["span_id"]: s for s in self.spans}

    def of(self, ctype: str) -> dict[str, dict]:
        return {s["attributes"]["dnpc.context_id"]: s for s in self.spans if s["type"] == ctype}

    def names(self, span: dict) -> list[str]:
        return [n for n, _ in self.events[span["span_id"]]]

    def related(self, span: dict) -> set[str]:
        """The span ids a span hangs under: its parent and its also_child_of links."""
        return {span["parent"]} | {linked for sid, linked in self.links if sid == span["span_id"]}


@pytest.fixture(scope="module")
def replays(tmp_path_factory) -> dict[str, Replay]:
    out = {}
    for name in LOGS:
        duck = tmp_path_factory.mktemp(name) / "x.duckdb"
        replay(CCTOOLS / name / "runinfo", duck)
        out[name] = Replay(duck)
    return out


@pytest.mark.parametrize("name", sorted(LOGS))
def test_every_record_is_used(name, replays):
    rep = replays[name]
    _, rel = LOGS[name]
    assert rel in rep.sources
    for source, (records, used) in rep.sources.items():
        if records:
            assert used >= 0.95 * records, f"{source}: {used} of {records} records used"
    # what is left are the '#' lines documenting the grammar, which every session writes first
    records, used = rep.sources[rel]
    header = sum(1 for line in (CCTOOLS / name / "runinfo" / rel).read_text().splitlines() if line.startswith("#"))
    assert records - used == header, (records, used, header)


@pytest.mark.parametrize("name", sorted(LOGS))
def test_one_span_per_session_and_task(name, replays):
    rep = replays[name]
    system, rel = LOGS[name]
    facts = log_facts(CCTOOLS / name / "runinfo" / rel)
    assert len(facts["sessions"]) == 1
    tasks = rep.of(f"{system}_task")
    assert len(tasks) == len(facts["tasks"]) == EXPECTED[name]["tasks"]
    # one session: the ids are the label and the cctools task id, as parsl.log and the debug log name them
    label = rel.split("/")[1]
    assert set(tasks) == {f"{label}/{task}" for _, task in facts["tasks"]}
    assert rep.disagreements["parent_conflict"] == 0
    managers = rep.of(f"{system}_manager")
    assert list(managers) == [label]
    manager = managers[label]
    assert rep.by_id[manager["parent"]]["type"] == "executor"
    assert "START" in rep.names(manager)


@pytest.mark.parametrize("name", sorted(LOGS))
def test_workers(name, replays):
    rep = replays[name]
    system, rel = LOGS[name]
    facts = log_facts(CCTOOLS / name / "runinfo" / rel)
    label = rel.split("/")[1]
    workers = rep.of(f"{system}_worker")
    assert len(workers) == len(facts["workers"]) == EXPECTED[name]["workers"]
    assert set(workers) == {f"{label}/{addr}" for _, addr in facts["workers"]}
    manager = rep.of(f"{system}_manager")[label]
    for w in workers.values():
        assert w["parent"] == manager["span_id"]
        assert "CONNECTION" in rep.names(w) and w["attributes"]["cctools.worker.id"].startswith("worker-")
    # every task that ran hangs under (or is linked to) the worker it ran on
    worker_spans = {w["span_id"] for w in workers.values()}
    ran = [t for t in rep.of(f"{system}_task").values() if "RUNNING" in rep.names(t)]
    assert ran
    for t in ran:
        assert rep.related(t) & worker_spans, t["attributes"]["dnpc.context_id"]


def test_unidentified_workers_are_manager_events(replays):
    """WORKER (null) …: records of a worker the manager has not identified yet, on the manager's span."""
    for name in ("vine-blast50-2023-01", "vine-all400-2023-02", "vine-lnni-2025"):
        _, rel = LOGS[name]
        texts = [t for _, t in read_log(CCTOOLS / name / "runinfo" / rel)]
        cache = sum(1 for t in texts if re.match(r"WORKER \(null\) CACHE[-_]UPDATE ", t))
        lost = sum(1 for t in texts if re.match(r"WORKER \(null\) DISCONNECTION ", t))
        assert cache + lost > 0, name
        rep = replays[name]
        names = Counter(rep.names(rep.of("vine_manager")[rel.split("/")[1]]))
        assert names["WORKER_CACHE_UPDATE"] == cache and names["WORKER_DISCONNECTION"] == lost, (name, names)


def test_transfer_units(replays):
    """Sizes in bytes, times in seconds, whichever unit the release printed (MB and s as '%f' until
    2023-03-01, bytes and µs since)."""
    rep = replays["vine-all400-2023-02"]
    worker = rep.of("vine_worker")["TaskVineExecutor/129.74.153.214:60706"]
    ev = [a for n, a in rep.events[worker["span_id"]] if n == "TRANSFER_INPUT"]
    # WORKER worker-805b… TRANSFER INPUT query.file 0.000274 0.000050
    assert {"cctools.transfer.file": "query.file", "cctools.transfer.size_bytes": 287,
            "cctools.transfer.wall_time_s": 0.00005}.items() <= ev[0].items()
    rep = replays["vine-lnni-2025"]
    worker = rep.of("vine_worker")["TaskVineExecutor/10.32.89.91:44614"]
    ev = {a["cctools.transfer.file"]: a for n, a in rep.events[worker["span_id"]] if n == "TRANSFER_INPUT"}
    # WORKER worker-21fe… TRANSFER INPUT models 3426155384 9039785 1742250342591684
    assert ev["models"]["cctools.transfer.size_bytes"] == 3426155384
    assert ev["models"]["cctools.transfer.wall_time_s"] == pytest.approx(9.039785)
    assert ev["models"]["cctools.transfer.start_time_s"] == pytest.approx(1742250342.591684)
    rep = replays["vine-blast50-2023-01"]
    task = rep.of("vine_task")["TaskVineExecutor/1"]
    ev = [a for n, a in rep.events[task["span_id"]] if n == "TRANSFER_INPUT"]
    # TRANSFER INPUT 1 0 0.000274 0.000055 query.file (per task, before 2023-02-08)
    assert ev[0]["cctools.transfer.size_bytes"] == 287 and ev[0]["cctools.transfer.file"] == "query.file"


def test_library_exit_is_an_error_only_when_the_worker_reported_it(replays):
    """LIBRARY_EXIT is every library instance's result: an error when the library process ended on its worker
    (WAITING_RETRIEVAL before RETRIEVED), not when the manager ended it (RUNNING → RETRIEVED)."""
    _, rel = LOGS["vine-lnni-2025"]
    prior: dict[str, str] = {}
    failed: set[str] = set()
    ended_by: dict[str, str] = {}
    for _, text in read_log(CCTOOLS / "vine-lnni-2025" / "runinfo" / rel):
        m = re.match(r"TASK (\d+) (RUNNING|WAITING_RETRIEVAL|RETRIEVED|DONE)(?: (\S+)\s+(-?\d+))?", text)
        if not m:
            continue
        task, state, result, code = m.groups()
        if state in ("RUNNING", "WAITING_RETRIEVAL"):
            prior[task] = state
        elif result == "LIBRARY_EXIT":
            ended_by[task] = "worker" if prior.get(task) == "WAITING_RETRIEVAL" else "manager"
            if prior.get(task) == "WAITING_RETRIEVAL":
                failed.add(task)
        elif result != "SUCCESS" or int(code) != 0:
            failed.add(task)
    assert Counter(ended_by.values()) == {"worker": 198, "manager": 1}
    tasks = {k.split("/")[1]: s for k, s in replays["vine-lnni-2025"].of("vine_task").items()}
    assert {t for t, s in tasks.items() if s["status"] == "ERROR"} == failed
    for task, by in ended_by.items():
        assert tasks[task]["attributes"]["cctools.library.ended_by"] == by
    # the one the manager ended (its worker was lost): LIBRARY_EXIT is not the error, DONE UNKNOWN is
    assert tasks["1510"]["attributes"]["cctools.task.result"] == "UNKNOWN" and "1510" in failed


# ---------------------------------------------------------------------- several manager sessions in one file
def _appended(lines: list[str], pid: str, shift_us: int) -> list[str]:
    """The same records as another manager session would write them: its pid, later times."""
    out = []
    for line in lines:
        m = RECORD.match(line)
        out.append(f"{int(m.group(1)) + shift_us} {pid} {line.split(' ', 2)[2]}" if m else line)
    return out


DAY_US = 86_400 * 1_000_000


def test_sessions_appended_to_one_transaction_log(tmp_path):
    """A Work Queue transaction_log three manager sessions appended to (task ids restart at 1 in each): the
    real wq-colmena-2023 log (pid 372101), then the same log as written by pid 372555 a day later, then by
    pid 372101 again two days later (a pid can repeat within a file: a container gives its manager the same
    pid on every run). Synthetic concatenation; every line is a real line of that log."""
    src = CCTOOLS / "wq-colmena-2023" / "runinfo" / "000" / "WorkQueueExecutor" / "transaction_log"
    lines = src.read_text().splitlines()
    run_dir = tmp_path / "runinfo"
    (run_dir / "000" / "WorkQueueExecutor").mkdir(parents=True)
    (run_dir / "000" / "parsl.log").write_text("")
    log = run_dir / "000" / "WorkQueueExecutor" / "transaction_log"
    log.write_text("\n".join(lines + _appended(lines, "372555", DAY_US) + _appended(lines, "372101", 2 * DAY_US))
                   + "\n")
    facts = log_facts(log)
    assert facts["sessions"] == {("372101", 1), ("372555", 1), ("372101", 2)}
    replay(run_dir, tmp_path / "x.duckdb")
    rep = Replay(tmp_path / "x.duckdb")
    records, used = rep.sources["000/WorkQueueExecutor/transaction_log"]
    assert used >= 0.95 * records
    scope = {("372101", 1): "WorkQueueExecutor/372101", ("372555", 1): "WorkQueueExecutor/372555",
             ("372101", 2): "WorkQueueExecutor/372101.2"}
    managers = rep.of("wq_manager")
    assert set(managers) == set(scope.values())
    tasks = rep.of("wq_task")
    assert len(tasks) == len(facts["tasks"]) == 3 * 1228
    assert set(tasks) == {f"{scope[s]}/{t}" for s, t in facts["tasks"]}
    assert rep.disagreements["parent_conflict"] == 0
    workers = rep.of("wq_worker")
    assert set(workers) == {f"{scope[s]}/{a}" for s, a in facts["workers"]} and len(workers) == 3 * 102
    for key, t in tasks.items():
        names = rep.names(t)
        # one life per task: this log's tasks each waited and ran once
        assert names.count("WAITING") == 1 and names.count("RUNNING") == 1 and names.count("DONE") == 1, key
        manager = managers[key.rsplit("/", 1)[0]]
        assert manager["start"] <= t["start"] and t["end"] <= manager["end"], key
        worker = rep.by_id[t["parent"]]
        assert worker["type"] == "wq_worker" and worker["attributes"]["dnpc.context_id"].startswith(
            key.rsplit("/", 1)[0] + "/"), key
    for m in managers.values():
        assert Counter(rep.names(m)) == {"START": 1, "END": 1}


def _shift_debug_day(line: str) -> str:
    m = re.match(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)(\.\d+ )(\S+)\[(\d+)\](.*)$", line)
    if not m:
        return line
    t = datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S") + timedelta(days=1)
    return f"{t:%Y/%m/%d %H:%M:%S}{m.group(2)}{m.group(3)}[{int(m.group(4)) + 1000}]{m.group(5)}"


def test_sessions_in_transaction_and_debug_logs_agree(tmp_path):
    """The debug log names a session's tasks as the transactions log does: the corpus run wq-2026's two
    Work Queue logs, each followed by the same log as a second manager (pid + 1000, a day later) would have
    appended it. Synthetic concatenation; every line is a real line of those logs."""
    src = CORPUS / "wq-2026" / "runinfo" / "000" / "worker_pool"
    if not src.is_dir():
        pytest.skip(f"the Work Queue corpus run is missing at {src}")
    run_dir = tmp_path / "runinfo"
    dst = run_dir / "000" / "worker_pool"
    dst.mkdir(parents=True)
    (run_dir / "000" / "parsl.log").write_text("")
    txn = (src / "transaction_log").read_text().splitlines()
    pid = txn[-1].split()[1]
    (dst / "transaction_log").write_text(
        "\n".join(txn + _appended(txn, str(int(pid) + 1000), DAY_US)) + "\n")
    debug = (src / "debug_log").read_text().splitlines()
    (dst / "debug_log").write_text("\n".join(debug + [_shift_debug_day(x) for x in debug]) + "\n")
    replay(run_dir, tmp_path / "x.duckdb")
    rep = Replay(tmp_path / "x.duckdb")
    facts = log_facts(dst / "transaction_log")
    sessions = sorted(facts["sessions"])
    assert len(sessions) == 2
    tasks = rep.of("wq_task")
    assert set(tasks) == {f"worker_pool/{s[0]}/{t}" for s, t in facts["tasks"]} and len(tasks) == 2 * 31
    # every task of both sessions got its binding and its worker's report from the debug log, none of
    # them strayed onto a plain (single-session) id
    for key, t in tasks.items():
        assert t["attributes"]["dnpc.binding"] == "debug_log", key
        assert "worker_result" in rep.names(t), key
    one = {k.rsplit("/", 1)[1]: t["attributes"]["parsl.executor.task_id"] for k, t in tasks.items()
           if k.startswith(f"worker_pool/{pid}/")}
    two = {k.rsplit("/", 1)[1]: t["attributes"]["parsl.executor.task_id"] for k, t in tasks.items()
           if k.startswith(f"worker_pool/{int(pid) + 1000}/")}
    assert one == two and len(one) == 31
    workers = rep.of("wq_worker")
    assert len(workers) == 2 and all(w["attributes"].get("host.name") for w in workers.values())
    assert set(rep.of("wq_manager")) == {f"worker_pool/{pid}", f"worker_pool/{int(pid) + 1000}"}
    assert rep.disagreements["parent_conflict"] == 0
