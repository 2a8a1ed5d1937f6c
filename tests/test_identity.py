"""Identity that never collides: a run with 64 workers on one manager, executor label `htex` (a synthetic
set of worker logs, every line in the exact form of a real Parsl 2026.10.26 worker_N.log). Under the
64-bit key of earlier versions, worker executions `htex/22@<manager>/22`-like ids collided and the replay
ended in an internal error."""

from __future__ import annotations

import duckdb

from dnpc2otel import replay

MANAGER = "fd83ca48a1c7"
WORKERS, TASKS = 64, 300
# the form of tests/data/corpus/htex-2026/runinfo/000/worker_pool/block-0/fd83ca48a1c7/worker_0.log
LINE = ("{t:.6f} 2026-11-21 19:59:{s:02d} HTEX-Worker-{r}-{pid} MainThread-140043610160000 "
        "parsl.executors.high_throughput.process_worker_pool:{lineno} worker INFO: {msg}")


def make_run(root):
    run = root / "runinfo" / "000"
    pool = run / "htex" / "block-0" / MANAGER
    pool.mkdir(parents=True)
    (run / "parsl.log").write_text("")  # the run marker; the workers' logs alone describe this run
    t0 = 1795291151.0
    for r in range(WORKERS):
        lines = [LINE.format(t=t0, s=11, r=r, pid=2000 + r, lineno=662, msg=f"Worker {r} started")]
        for k, task in enumerate(range(r, TASKS, WORKERS)):
            t = t0 + 0.5 + k * 0.1 + r * 0.001
            for dt, lineno, msg in ((0, 775, "Received executor task"), (0.05, 809, "Completed executor task"),
                                    (0.051, 821, "All processing finished for executor task")):
                lines.append(LINE.format(t=t + dt, s=11 + int(t + dt - t0), r=r, pid=2000 + r, lineno=lineno,
                                         msg=f"{msg} {task}"))
        (pool / f"worker_{r}.log").write_text("\n".join(lines) + "\n")
    return root / "runinfo"


def test_64_workers_on_one_manager_with_the_label_htex(tmp_path):
    out = tmp_path / "ids.duckdb"
    summary = replay(make_run(tmp_path), out)
    assert summary.contexts["worker_execution"] == TASKS and summary.contexts["worker"] == WORKERS
    with duckdb.connect(str(out), read_only=True) as c:
        spans, distinct = c.execute("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchone()
        # the same contexts under the 64-bit key this replaced: they collide, so the test means something
        (old_collisions,) = c.execute(
            """SELECT count(*) - count(DISTINCT hash('dir:000', context_type, context_id))
               FROM (SELECT DISTINCT context_type, context_id FROM observations)""").fetchone()
    assert spans == distinct == summary.spans
    assert old_collisions > 0
