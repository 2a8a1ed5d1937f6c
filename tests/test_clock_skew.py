"""Clock skew between hosts, from causal event pairs: a real run whose worker host's logs are shifted by a
known offset is detected with that skew, and with correction on its times come back to within 1 ms."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, copy_run

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
    assert all(abs(after[k][0] - before[k][0] - SHIFT_S * 1e9) < 1e6 for k in before)  # reported, not hidden

    fixed = tmp_path / "fixed.duckdb"
    summary = replay(shifted_dir, fixed, correct_skew=True)
    assert summary.clocks[0]["corrected"]
    restored = worker_executions(fixed)
    worst = max(max(abs(restored[k][0] - before[k][0]), abs(restored[k][1] - before[k][1])) for k in before)
    assert worst < 1_000_000, f"worst error {worst / 1e6:.3f} ms"
