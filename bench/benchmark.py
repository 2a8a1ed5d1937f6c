"""Conversion speed and memory of `dnpc2otel replay`, as ratios against a baseline measured beside it.

    python bench/benchmark.py [--tasks 100000] [--log-mb 2000] [--keep DIR]

1. Makes a synthetic run_dir in the shapes of a real Parsl 2026 run (parsl.log with the DataFlowKernel's
   own message templates and DEBUG noise up to --log-mb, and a monitoring.db with task/try/status rows).
2. Baseline: the time DuckDB takes merely to read every log line and run one regular expression over it
   (what any converter must at least do), and the time to read the SQLite tables.
3. Runs `dnpc2otel replay` in a child process and reports its wall time, its ratio to the baseline, peak
   resident memory, and throughput. The target: 100,000 tasks and 2 GB of logs in ~10 s on 2 cores.
Ratios, not seconds, are what to compare between machines and commits.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

T0 = 1_795_291_145.0
HEAD = "MainProcess-1736 MainThread-140144885656448"


def _line(t: float, logger: str, func: str, level: str, msg: str) -> str:
    local = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{t:.6f} {local} {HEAD} {logger} {func} {level}: {msg}\n"


def make_run(root: Path, tasks: int, log_mb: int, seed: int = 1) -> Path:
    rnd = random.Random(seed)
    run_id = str(uuid.UUID(int=rnd.getrandbits(128)))
    run_dir = root / "runinfo"
    (run_dir / "000").mkdir(parents=True)
    dfk = "parsl.dataflow.dflow:1"
    log = open(run_dir / "000" / "parsl.log", "w")
    log.write(_line(T0, dfk, "__init__", "INFO", "Starting DataFlowKernel with config"))
    log.write("Config(\n    executors=(...)\n)\n")
    log.write(_line(T0, dfk, "__init__", "INFO", f"Run id is: {run_id}"))
    htex = "parsl.executors.high_throughput.executor.HighThroughputExecutor"
    log.write(_line(T0, dfk, "add_executors", "INFO", f"Adding executor worker_pool of type {htex}"))
    db = sqlite3.connect(run_dir / "monitoring.db")
    db.executescript("""
        CREATE TABLE workflow (run_id TEXT, workflow_name TEXT, workflow_version TEXT, time_began DATETIME,
          time_completed DATETIME, host TEXT, user TEXT, rundir TEXT, tasks_failed_count INTEGER,
          tasks_completed_count INTEGER);
        CREATE TABLE task (task_id INTEGER, run_id TEXT, task_depends TEXT, task_func_name TEXT, task_memoize TEXT,
          task_hashsum TEXT, task_inputs TEXT, task_outputs TEXT, task_stdin TEXT, task_stdout TEXT, task_stderr TEXT,
          task_time_invoked DATETIME, task_time_returned DATETIME, task_fail_count INTEGER, task_fail_cost FLOAT);
        CREATE TABLE try (try_id INTEGER, task_id INTEGER, run_id TEXT, block_id TEXT, hostname TEXT,
          task_executor TEXT, task_try_time_launched DATETIME, task_try_time_running DATETIME,
          task_try_time_returned DATETIME, task_fail_history TEXT, task_joins TEXT);
        CREATE TABLE status (task_id INTEGER, task_status_name TEXT, timestamp DATETIME, run_id TEXT, try_id INTEGER);
        CREATE TABLE block (run_id TEXT, executor_label TEXT, block_id TEXT, job_id TEXT, timestamp DATETIME,
          status TEXT);
        CREATE TABLE resource (try_id INTEGER, task_id INTEGER, run_id TEXT, timestamp DATETIME,
          resource_monitoring_interval FLOAT, psutil_process_pid INTEGER, psutil_process_memory_percent FLOAT,
          psutil_process_children_count FLOAT, psutil_process_time_user FLOAT, psutil_process_time_system FLOAT,
          psutil_process_memory_virtual FLOAT, psutil_process_memory_resident FLOAT, psutil_process_disk_read FLOAT,
          psutil_process_disk_write FLOAT, psutil_process_status TEXT);
    """)

    def ts(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    per_task_noise = max(0, (log_mb * 1_000_000 // max(tasks, 1) - 1500) // 200)
    noise = ("parsl.executors.high_throughput.zmq_pipes:148", "put", "DEBUG",
             "Sending TasksOutgoing message with a payload that a real run would also log at DEBUG level x")
    task_rows, try_rows, status_rows = [], [], []
    for i in range(tasks):
        t = T0 + 1 + i * 0.0005
        app = ("work", "flaky", "shell")[i % 3]
        w = log.write
        w(_line(t, dfk, "submit", "DEBUG", f"Task {i} will be sent to executor worker_pool"))
        w(_line(t, dfk, "submit", "INFO", f"Task {i} submitted for App {app}, not waiting on any dependency"))
        w(_line(t, dfk, "_update_task_state", "INFO", f"Task {i} initializing state to pending"))
        w(_line(t + 0.001, "parsl.dataflow.memoization:379", "check_memo", "DEBUG", f"Task {i} will not be memoized"))
        w(_line(t + 0.002, dfk, "_update_task_state", "INFO", f"Task {i} changing state from pending to launched"))
        w(_line(t + 0.002, dfk, "launch_task", "INFO",
                f"Parsl task {i} try 0 launched on executor worker_pool with executor id {i + 1}"))
        for _ in range(per_task_noise):
            w(_line(t + 0.003, *noise))
        end = t + 0.5 + rnd.random()
        w(_line(end, dfk, "_update_task_state", "INFO", f"Task {i} changing state from launched to exec_done"))
        task_rows.append((i, run_id, "", app, "0", None, "None", "None", None, "", "", ts(t), ts(end + 0.001), 0, 0.0))
        try_rows.append((0, i, run_id, "0", "node1", "worker_pool", ts(t + 0.001), ts(t + 0.3), ts(end), "", None))
        for name, st in (("pending", t), ("launched", t + 0.002), ("running", t + 0.3), ("running_ended", end - 0.01),
                         ("exec_done", end + 0.0001)):
            status_rows.append((i, name, ts(st), run_id, 0))
        if len(task_rows) >= 50_000:
            _flush(db, task_rows, try_rows, status_rows)
    _flush(db, task_rows, try_rows, status_rows)
    tend = T0 + 2 + tasks * 0.0005 + 2
    log.write(_line(tend, dfk, "cleanup", "INFO", "DFK cleanup complete"))
    log.close()
    db.execute("INSERT INTO workflow VALUES (?, 'bench.py', 'v', ?, ?, 'vm', 'root', ?, 0, ?)",
               (run_id, ts(T0), ts(tend), str(run_dir / "000"), tasks))
    db.execute("INSERT INTO block VALUES (?, 'worker_pool', '0', '1', ?, 'RUNNING')", (run_id, ts(T0 + 0.5)))
    db.commit()
    db.close()
    return run_dir


def _flush(db, tasks, tries, statuses) -> None:
    db.executemany(f"INSERT INTO task VALUES ({','.join('?' * 15)})", tasks)
    db.executemany(f"INSERT INTO try VALUES ({','.join('?' * 11)})", tries)
    db.executemany("INSERT INTO status VALUES (?, ?, ?, ?, ?)", statuses)
    tasks.clear()
    tries.clear()
    statuses.clear()


BASELINE = r"""
import duckdb, sqlite3, sys, time
run_dir = sys.argv[1]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute(r'''SELECT count(*) FILTER (WHERE regexp_matches(line, '^\d+\.\d+ \S+ \S+ \S+ \S+ \S+ \S+ [A-Z]+: '))
    FROM read_csv(?, columns={'line': 'VARCHAR'}, delim=chr(1), quote='', escape='', header=false,
                  auto_detect=false, strict_mode=false)''', [run_dir + '/000/parsl.log']).fetchone()
db = sqlite3.connect(run_dir + '/monitoring.db')
for table in ('task', 'try', 'status'):
    db.execute(f'SELECT * FROM {table}').fetchall()
print(time.perf_counter() - t)
"""


def child(argv: list[str]) -> tuple[float, int, str]:
    """Run a child; return (wall seconds, peak RSS in MiB, stdout)."""
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return wall, rss, proc.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--log-mb", type=int, default=200, help="parsl.log size to pad up to with DEBUG noise")
    p.add_argument("--keep", type=Path, help="make (or reuse) the synthetic run_dir here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dnpc2otel-bench-"))
    run_dir = work / "runinfo"
    if not run_dir.exists():
        t = time.perf_counter()
        make_run(work, args.tasks, args.log_mb)
        print(f"made {run_dir} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    log_bytes = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
    base_s, base_rss, out = child([sys.executable, "-c", BASELINE, str(run_dir)])
    base_inner = float(out.strip().splitlines()[-1])
    out_db = work / "bench.duckdb"
    out_db.unlink(missing_ok=True)
    replay_s, replay_rss, _ = child([sys.executable, "-m", "dnpc2otel.cli", "replay", str(run_dir),
                                     "--duckdb", str(out_db), "-q"])
    result = {
        "tasks": args.tasks,
        "input_mb": round(log_bytes / 1e6, 1),
        "baseline_s": round(base_inner, 2),
        "replay_s": round(replay_s, 2),
        "ratio_to_baseline": round(replay_s / base_inner, 2),
        "replay_mb_per_s": round(log_bytes / 1e6 / replay_s, 1),
        "peak_rss_mib": replay_rss,
        "cores": os.cpu_count(),
        "projected_s_for_100k_tasks_2gb": round(replay_s * max(2000 / (log_bytes / 1e6), 100_000 / args.tasks), 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32} {v}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
