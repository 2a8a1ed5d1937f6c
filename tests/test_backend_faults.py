"""Trace backend faults (issue 15): a real Jaeger with persistent storage (Badger) unreachable, stopped and
restarted mid-export; slow, refusing and failing receivers. Export retries within its deadline, records per
batch what was acknowledged (DB.export.json), resumes without sending an acknowledged span again, and says
what it sent; every span ends up in Jaeger exactly once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS
from jaeger_fixture import JAEGER_CONFIG, _free_ports, badger_jaeger, own_jaeger
from otlp_receiver import HttpReceiver

from dnpc2otel import replay
from dnpc2otel.export.otlp import ExportError, OtlpConfig, export
from dnpc2otel.export.otlp_state import state_path

BATCH = 10  # spans per batch: the run's ~300 spans make some 30 batches


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "htex.duckdb"
    replay(CORPUS / "htex-2026" / "runinfo", out)
    return out


@pytest.fixture
def fresh_db(db, tmp_path) -> Path:
    """A copy per test: each has its own state file."""
    out = tmp_path / "htex.duckdb"
    out.write_bytes(db.read_bytes())
    return out


def spans_by_trace(path: Path) -> dict[str, set[str]]:
    con = duckdb.connect(str(path), read_only=True)
    out: dict[str, set[str]] = {}
    for tid, sid in con.execute("SELECT trace_id, span_id FROM spans").fetchall():
        out.setdefault(tid, set()).add(sid)
    con.close()
    return out


def assert_exactly_once_in_jaeger(jaeger, path: Path) -> None:
    for tid, want in spans_by_trace(path).items():
        got = [s["span_id"] for s in jaeger.wait_for_spans(tid, len(want), timeout=30)]
        assert len(got) == len(set(got)), f"trace {tid}: a span stored twice"
        assert set(got) == want, f"trace {tid}: spans lost or invented"


def entry(path: Path) -> dict:
    (only,) = json.loads(state_path(path).read_text())["exports"].values()
    return only


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def badger(tmp_path):
    server = badger_jaeger(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def total_spans(path: Path) -> int:
    return sum(len(v) for v in spans_by_trace(path).values())


# ---------------------------------------------------------------------- a real Jaeger
def test_jaeger_unreachable_from_the_start(fresh_db):
    """Configured but down: retried until the deadline, then one line with the resume command; nothing acked."""
    port = _free_ports(1)[0]
    t0 = time.monotonic()
    proc = cli("export", str(fresh_db), "--otlp-endpoint", f"http://127.0.0.1:{port}", "--otlp-retry-seconds", "2")
    line = one_error_line(proc)
    assert time.monotonic() - t0 >= 2  # it did retry for the time given
    assert f"0 of {total_spans(fresh_db):,} spans acknowledged" in line
    assert f"resume with: dnpc2otel export {fresh_db} --otlp-endpoint http://127.0.0.1:{port}/v1/traces" in line
    assert str(state_path(fresh_db)) in line
    state = entry(fresh_db)
    assert state["spans"] == 0 and state["cursor"] is None and not state["complete"]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_jaeger_restarted_mid_export_loses_and_doubles_nothing(badger, fresh_db, protocol):
    """Jaeger (Badger) stops after some batches are acknowledged and comes back on the same ports and data: the
    running export retries, completes, and every span is in Jaeger exactly once."""
    total = total_spans(fresh_db)
    stopped = threading.Event()
    restarter: list[threading.Timer] = []

    def on_progress(done: int, _total: int) -> None:
        if done >= total // 3 and not stopped.is_set():
            stopped.set()
            badger.stop()
            timer = threading.Timer(2.0, badger.start)
            timer.start()
            restarter.append(timer)

    endpoint = badger.otlp_http_endpoint if protocol == "http/protobuf" else badger.otlp_grpc_endpoint
    cfg = OtlpConfig.from_env(endpoint, protocol, retry_for_s=60)
    t0 = time.monotonic()
    result = export(fresh_db, cfg, state=True, batch_spans=BATCH, on_progress=on_progress)
    assert time.monotonic() - t0 < 45  # back soon after Jaeger is (gRPC's own reconnect backoff is bounded)
    for timer in restarter:
        timer.join()
    assert stopped.is_set() and result.retries >= 1
    assert result.spans == total and result.batches >= total // BATCH
    assert entry(fresh_db)["complete"] and entry(fresh_db)["spans"] == total
    assert_exactly_once_in_jaeger(badger, fresh_db)


def test_jaeger_stopped_mid_export_then_export_resumes(badger, fresh_db):
    """Jaeger stops for good mid-export: the export fails saying what was acknowledged; once Jaeger is back, the
    command it names sends only the rest, and every span is in Jaeger exactly once."""
    total = total_spans(fresh_db)

    def on_progress(done: int, _total: int) -> None:
        if done >= total // 2 and badger.running:
            badger.stop()

    cfg = OtlpConfig.from_env(badger.otlp_http_endpoint, "http/protobuf", retry_for_s=1.5)
    with pytest.raises(ExportError) as e:
        export(fresh_db, cfg, state=True, batch_spans=BATCH, on_progress=on_progress)
    acked = entry(fresh_db)["spans"]
    assert total // 2 <= acked < total and not entry(fresh_db)["complete"]
    assert f"{acked:,} of {total:,} spans acknowledged, {total - acked:,} left" in str(e.value)
    badger.start()
    command = str(e.value).split("resume with: ", 1)[1].split()
    assert command[:3] == ["dnpc2otel", "export", str(fresh_db)]
    proc = cli(*command[1:], "--otlp-batch-spans", str(BATCH))
    assert proc.returncode == 0, proc.stderr
    assert f"OTLP: {total - acked:,} spans," in proc.stdout  # only the rest was sent
    assert f"({acked:,} spans) acknowledged by an earlier export were not sent again" in proc.stdout
    assert entry(fresh_db)["complete"] and entry(fresh_db)["spans"] == total
    assert_exactly_once_in_jaeger(badger, fresh_db)
    again = cli(*command[1:])  # complete: nothing is sent again unless asked
    assert again.returncode == 0 and "OTLP: 0 spans," in again.stdout, again.stderr
    assert "OTLP: 0 spans," not in cli(*command[1:], "--restart").stdout


def test_jaeger_refuses_an_oversized_request_which_is_split(fresh_db, tmp_path):
    """Jaeger's HTTP body limit far below a request: it answers 400 "too large", export halves until it fits."""
    server = own_jaeger(JAEGER_CONFIG, tmp_path, {"JAEGER_OTLP_HTTP_MAX_BODY": "40000"})
    server.start()
    try:
        cfg = OtlpConfig.from_env(server.otlp_http_endpoint, "http/protobuf", max_request_bytes=10**8)
        result = export(fresh_db, cfg, batch_spans=10**6)
        assert result.splits >= 2 and result.requests == result.splits + 1
        assert_exactly_once_in_jaeger(server, fresh_db)
    finally:
        server.stop()


# ---------------------------------------------------------------------- receivers that misbehave
def test_slow_receiver_times_out_and_is_retried(fresh_db):
    """The first answers come after the client's timeout: those batches are sent again (at least once), and
    everything arrives."""
    with HttpReceiver(delay_first=2, delay_s=1.5) as rx:
        cfg = OtlpConfig.from_env(rx.endpoint, "http/protobuf", timeout_s=0.5)
        result = export(fresh_db, cfg, batch_spans=BATCH)
    ids = [s["span"].span_id.hex() for s in rx.received.spans()]
    assert result.retries >= 2 and result.spans == total_spans(fresh_db)
    assert set(ids) == set().union(*spans_by_trace(fresh_db).values())
    assert len(ids) - len(set(ids)) <= 2 * BATCH  # only the timed-out batches arrived twice


def test_errors_then_success_honour_retry_after(fresh_db):
    before = hashlib.sha256(fresh_db.read_bytes()).hexdigest()
    with HttpReceiver(answers=[(500, None), (503, "1"), (429, "1")]) as rx:
        t0 = time.monotonic()
        result = export(fresh_db, OtlpConfig.from_env(rx.endpoint, "http/protobuf"), batch_spans=BATCH, state=True)
    assert time.monotonic() - t0 >= 2  # two Retry-After: 1
    assert result.retries == 3 and rx.received.refused == 3
    assert len(rx.received.spans()) == total_spans(fresh_db)
    # the database is only read; the state file is the one thing written beside it
    assert hashlib.sha256(fresh_db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in fresh_db.parent.iterdir()) == [fresh_db.name, state_path(fresh_db).name]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_errors_that_will_not_heal_stop_at_once(fresh_db, status):
    with HttpReceiver(answers=[(status, None)] * 100) as rx:
        t0 = time.monotonic()
        proc = cli("export", str(fresh_db), "--otlp-endpoint", rx.endpoint, "--otlp-retry-seconds", "60")
    line = one_error_line(proc)
    assert time.monotonic() - t0 < 30 and rx.received.refused == 1
    assert f"refused the spans: HTTP {status}" in line and "resume with: dnpc2otel export" in line
    assert entry(fresh_db)["spans"] == 0


def test_overall_deadline(fresh_db):
    with HttpReceiver(answers=[(503, None)] * 1000) as rx:
        t0 = time.monotonic()
        proc = cli("export", str(fresh_db), "--otlp-endpoint", rx.endpoint, "--otlp-deadline", "2")
    line = one_error_line(proc)
    assert 2 <= time.monotonic() - t0 < 30
    assert "deadline of 2 s reached" in line
