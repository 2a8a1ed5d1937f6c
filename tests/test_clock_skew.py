"""Clock skew between hosts, from causal event pairs: a real run whose worker host's logs are shifted by a
known offset is detected with that skew, and with correction on its times come back to within 1 ms; on
single-host runs (every corpus run, fresh runs where a manager is killed) no skew is invented: the pairs a
lost manager's task would make wrong are left out, and bounds that contradict give no estimate at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run, corpus_runs, make_parsl_run

from dnpc2otel import replay

SHIFT_S = 0.25
HTEX_RUNS = ["htex-2026", "htex-json-2026", "htex-2023"]


def shift_worker_host(run_dir: Path, seconds: float) -> None:
    """Move every time in the manager's and workers' logs (one host) by `seconds`, in each log format."""
    logs = [p for p in run_dir.glob("000/*/block-*/*/*") if p.suffix in (".log", ".jsonlog")]
    assert logs
    for log in logs:
        out = []
        for line in log.read_text().splitlines(keepends=True):
            if log.suffix == ".jsonlog":
                record = json.loads(line)
                record["created"] += seconds
                line = json.dumps(record) + "\n"
            elif m := re.match(r"^(\d+\.\d+)( .*)$", line, re.S):  # 2026: epoch first
                line = f"{float(m.group(1)) + seconds:.6f}{m.group(2)}"
            elif m := re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})( .*)$", line, re.S):  # before: local, ms
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f") + timedelta(seconds=seconds)
                line = t.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] + m.group(2)
            out.append(line)
        log.write_text("".join(out))


def worker_executions(db: Path) -> dict[str, tuple[int, int]]:
    with duckdb.connect(str(db), read_only=True) as c:
        rows = c.execute("""SELECT attributes->>'$."dnpc.context_id"', start_time_unix_nano, end_time_unix_nano
                            FROM spans WHERE context_type = 'worker_execution'""").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def worker_events(db: Path) -> dict[tuple[str, str], int]:
    """The observed times of the worker executions' events (spans may be clipped into their parents)."""
    with duckdb.connect(str(db), read_only=True) as c:
        rows = c.execute("""SELECT context_id, event, source, line, time_unix_nano FROM observations
                            WHERE context_type = 'worker_execution' AND event IS NOT NULL""").fetchall()
    return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


def clocks(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute("SELECT clock, skew_ms, corrected, pairs FROM clocks ORDER BY clock").fetchall()


@pytest.mark.parametrize("name", HTEX_RUNS)
def test_shifted_worker_host_is_detected_and_corrected(name, tmp_path):
    original = tmp_path / "original.duckdb"
    replay(CORPUS / name / "runinfo", original)
    (host,) = clocks(original)
    assert host[0].startswith("manager:") and host[1] == 0 and host[3] > 50  # consistent clocks: no skew

    shifted_dir = copy_run(CORPUS / name / "runinfo", tmp_path)
    shift_worker_host(shifted_dir, SHIFT_S)
    shifted = tmp_path / "shifted.duckdb"
    replay(shifted_dir, shifted)
    ((clock, skew_ms, corrected, _),) = clocks(shifted)
    assert clock == host[0] and not corrected
    assert abs(skew_ms - SHIFT_S * 1e3) < 1.0, skew_ms
    before, after = worker_executions(original), worker_executions(shifted)
    assert before.keys() == after.keys() and len(before) == 31
    seen, moved = worker_events(original), worker_events(shifted)
    assert seen.keys() == moved.keys() and len(seen) >= 3 * 31
    assert all(abs(moved[k] - seen[k] - SHIFT_S * 1e9) < 1e6 for k in seen)  # reported, not hidden

    fixed = tmp_path / "fixed.duckdb"
    summary = replay(shifted_dir, fixed, correct_skew=True)
    assert summary.clocks[0]["corrected"]
    restored = worker_events(fixed)
    worst = max(abs(restored[k] - seen[k]) for k in seen)
    assert worst < 1_000_000, f"worst error {worst / 1e6:.3f} ms"
    spans_back = worker_executions(fixed)
    worst = max(max(abs(spans_back[k][0] - before[k][0]), abs(spans_back[k][1] - before[k][1])) for k in before)
    assert worst < 1_000_000, f"worst span error {worst / 1e6:.3f} ms"


# ------------------------------------------------------------------ single host: no skew is invented
def clock_rows(db: Path) -> list[dict]:
    with duckdb.connect(str(db), read_only=True) as c:
        cur = c.execute("SELECT * FROM clocks ORDER BY trace_id, clock")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def assert_no_invented_skew(db: Path) -> list[dict]:
    """One host: the clocks agree, so every clock's bounds, widened by the stamps' resolution, hold 0 and
    the estimate is 0 (or, with no pair left, nothing); nothing is corrected."""
    rows = clock_rows(db)
    for c in rows:
        assert c["consistent"], c
        if c["pairs"] == 0:
            assert c["skew_ms"] is None, c
            continue
        res = c["resolution_ms"]
        assert c["lower_ms"] is None or c["lower_ms"] - res <= 0, c
        assert c["upper_ms"] is None or c["upper_ms"] + res >= 0, c
        assert c["skew_ms"] == 0 or abs(c["skew_ms"]) <= res, c
    return rows


@pytest.mark.parametrize("run_dir", corpus_runs(), ids=lambda p: p.parent.name)
def test_single_host_corpus_runs_have_no_skew(run_dir, tmp_path):
    db = tmp_path / "out.duckdb"
    replay(run_dir, db)
    rows = assert_no_invented_skew(db)
    if any(run_dir.glob("*/*/block-*/*/worker_*")):  # HTEX worker logs: their host's clock is measured
        assert rows and all(c["pairs"] > 0 for c in rows), rows


def late_completions(db: Path) -> list[tuple[str, str, float]]:
    """Worker executions whose 'completed' comes after their try's 'returned': (try, its status, by ms)."""
    with duckdb.connect(str(db), read_only=True) as c:
        return c.execute(
            """
            WITH done AS (SELECT span_id, max(time_unix_nano) AS t FROM observations
                          WHERE context_type = 'worker_execution' AND event = 'completed' GROUP BY ALL),
            back AS (SELECT span_id, min(time_unix_nano) AS t FROM observations
                     WHERE context_type = 'try' AND event = 'returned' GROUP BY ALL)
            SELECT t.attributes->>'$."dnpc.context_id"', t.status_code, (done.t - back.t) / 1e6
            FROM spans w JOIN spans e ON e.span_id = w.parent_span_id AND e.context_type = 'executor_task'
            JOIN spans t ON t.span_id = e.parent_span_id AND t.context_type = 'try'
            JOIN done ON done.span_id = w.span_id JOIN back ON back.span_id = t.span_id
            WHERE w.context_type = 'worker_execution' AND done.t > back.t ORDER BY 1
            """).fetchall()


def test_a_lost_managers_task_makes_no_skew(tmp_path):
    """mixkill-2026: a task kills its only manager; the DFK fails it while its worker still runs it, and the
    worker's 'completed' comes 3.2 s after the DFK's 'returned'. As a causal pair that would be a lower
    bound far above the upper one (it made +1,848 ms of skew); it is left out, and the clock agrees."""
    db = tmp_path / "mixkill.duckdb"
    replay(CORPUS / "mixkill-2026" / "runinfo", db)
    (clock,) = assert_no_invented_skew(db)
    late = late_completions(db)
    assert late and all(status == "ERROR" for _, status, _ in late), late  # only failed tries
    assert max(ms for _, _, ms in late) > clock["upper_ms"] + clock["resolution_ms"]  # would contradict
    assert clock["excluded_pairs"] >= len(late) and clock["skew_ms"] == 0


@pytest.mark.slow
def test_fresh_runs_with_a_killed_manager_have_no_skew(fresh_htex_faults, tmp_path):
    """The case of the issue: one host, two managers, a task kills one (twice, in mixed.py: its retry kills
    the other). Before pairs of failed attempts were left out, every such run gave contradictory bounds."""
    db = tmp_path / "faults.duckdb"
    replay(fresh_htex_faults, db)
    assert len(assert_no_invented_skew(db)) >= 2
    killed = make_parsl_run(tmp_path, "--kill-manager", "--blocks", "2", "--worker-debug", workflow="mixed.py")
    db = tmp_path / "killed.duckdb"
    replay(killed, db)
    rows = assert_no_invented_skew(db)
    assert len(rows) >= 2 and all(c["pairs"] > 0 for c in rows)
    # a worker that completes after the DFK's return (usually the killer's, 5 s asleep after the kill) ran
    # a failed try: the DFK's end was the lost manager's doing, and the pair was left out
    late = late_completions(db)
    assert all(status == "ERROR" for _, status, _ in late), late
    assert not late or sum(c["excluded_pairs"] for c in rows) >= len(late)


def test_pairs_through_inferred_bindings_are_left_out(tmp_path):
    """Parsl 1.1-dev (2021): no line names both the DFK's and HTEX's task id; the binding is inferred from
    order (dnpc.binding = inferred) and could pair one task's launch with another's execution."""
    db = tmp_path / "old.duckdb"
    replay(CORPUS.parent / "realworld" / "annawoodard+helloworldparsl" / "runinfo", db)
    with duckdb.connect(str(db), read_only=True) as c:
        bindings = c.execute("""SELECT DISTINCT attributes->>'$."dnpc.binding"' FROM spans
                                WHERE context_type = 'executor_task'""").fetchall()
    assert bindings == [("inferred",)]
    (clock,) = assert_no_invented_skew(db)
    assert clock["pairs"] == 0 and clock["excluded_pairs"] > 0 and clock["skew_ms"] is None


# ------------------------------------------------------------------ contradictory bounds: no estimate
def shift_one_log(log: Path, seconds: float) -> None:
    """Move the times of one 2026 worker log (epoch first): its host's other logs stay as they were."""
    out = []
    for line in log.read_text().splitlines(keepends=True):
        if m := re.match(r"^(\d+\.\d+)( .*)$", line, re.S):
            line = f"{float(m.group(1)) + seconds:.6f}{m.group(2)}"
        out.append(line)
    log.write_text("".join(out))


def test_contradictory_bounds_give_no_estimate_and_no_correction(tmp_path):
    """One of a manager's two worker logs stamped 0.25 s late (a log whose clock is not the one its path
    says): its pairs put the offset above +249 ms, the other log's below +1.5 ms. No shift satisfies both:
    the clock is inconsistent, not estimated, never corrected, and the pairs on each side are listed."""
    run_dir = copy_run(CORPUS / "features-2026" / "runinfo", tmp_path)
    (log,) = run_dir.glob("000/*/block-*/*/worker_0.log")
    shift_one_log(log, SHIFT_S)
    plain, fixed = tmp_path / "plain.duckdb", tmp_path / "fixed.duckdb"
    replay(run_dir, plain)
    summary = replay(run_dir, fixed, correct_skew=True)
    (clock,) = clock_rows(fixed)
    assert not clock["consistent"] and clock["skew_ms"] is None and not clock["corrected"]
    assert clock["lower_ms"] > clock["upper_ms"] + clock["resolution_ms"]
    assert not summary.clocks[0]["corrected"]
    assert worker_events(fixed) == worker_events(plain)  # nothing shifted
    with duckdb.connect(str(fixed), read_only=True) as c:
        (row,) = c.execute("""SELECT context_type, subject, size_ms, detail FROM disagreements
                              WHERE kind = 'contradictory_clock_bounds'""").fetchall()
    context_type, subject, size_ms, detail = row[0], row[1], row[2], json.loads(row[3])
    assert context_type == "workflow" and subject == clock["clock"]
    assert size_ms == pytest.approx(clock["lower_ms"] - clock["upper_ms"])
    shifted = str(log.relative_to(run_dir))
    assert detail["lower_pairs"] and detail["upper_pairs"]
    # the lower bounds that cross come from the late log, the upper ones from the other
    assert all(p["before_source"].startswith(shifted + ":") for p in detail["lower_pairs"]), detail
    assert not any(p["after_source"].startswith(shifted + ":") for p in detail["upper_pairs"]), detail
    assert -detail["lower_pairs"][0]["gap_ms"] == pytest.approx(clock["lower_ms"])

    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "replay", str(run_dir), "--duckdb",
                           str(tmp_path / "cli.duckdb"), "--correct-skew", "--no-export"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{clock['clock']} contradictory bounds" in proc.stdout and "not estimated" in proc.stdout, proc.stdout
