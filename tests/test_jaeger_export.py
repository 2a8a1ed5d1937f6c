"""replay → a real Jaeger v2 (built from the Go module proxy, memory storage) → read back via its APIs.

Every trace is read through both /api/v3/traces/{id} (OTLP JSON) and /api/traces/{id} (the UI's JSON,
where links are references) and compared with the DuckDB file it came from: nothing lost, nothing
duplicated, parents, links, events with their times, attributes, services and status intact.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_runs

from dnpc2otel import replay
from dnpc2otel.export.otlp import OtlpConfig, export

pytestmark = pytest.mark.slow


def duck_spans(db: Path, trace_id: str) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = None
        spans = {}
        for r in con.execute("SELECT * FROM spans WHERE trace_id = ?", [trace_id]).fetchall():
            cols = cols or [d[0] for d in con.description]
            s = dict(zip(cols, r, strict=True))
            s["attributes"] = json.loads(s["attributes"])
            s["events"], s["links"] = [], []
            spans[s["span_id"]] = s
        for sid, t, name, attrs in con.execute(
            "SELECT span_id, time_unix_nano, name, attributes FROM span_events WHERE trace_id = ?", [trace_id]
        ).fetchall():
            spans[sid]["events"].append((t, name, json.loads(attrs)))
        for sid, lsid, attrs in con.execute(
            "SELECT span_id, linked_span_id, attributes FROM span_links WHERE trace_id = ?", [trace_id]
        ).fetchall():
            spans[sid]["links"].append((lsid, json.loads(attrs)))
        return spans
    finally:
        con.close()


def trace_ids(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT trace_id FROM runs ORDER BY trace_id").fetchall()]
    finally:
        con.close()


def assert_trace_in_jaeger(jaeger, db: Path, trace_id: str) -> None:
    want = duck_spans(db, trace_id)
    got = jaeger.wait_for_spans(trace_id, len(want))
    ids = [s["span_id"] for s in got]
    assert len(ids) == len(set(ids)) == len(want), "spans lost or duplicated in Jaeger"
    assert set(ids) == set(want)
    for s in got:
        w = want[s["span_id"]]
        assert s["parent_span_id"] == (w["parent_span_id"] or "")
        assert s["name"] == w["name"] and s["service_name"] == w["service_name"]
        assert s["start_ns"] == w["start_time_unix_nano"]
        # Jaeger keeps a duration, not an end: an end can come back 1 ns off (float rounding in its model)
        assert abs(s["end_ns"] - w["end_time_unix_nano"]) <= 1_000
        assert s["status_code"] == w["status_code"]
        if w["status_code"] == "ERROR" and w["status_message"]:
            assert s["status_message"] == w["status_message"]
        for key in ("parsl.run_id", "dnpc.context_type", "parsl.task.id", "parsl.try.id", "parsl.app.name"):
            if key in w["attributes"]:
                assert s["attributes"][key] == w["attributes"][key], key
        assert sorted((e["time_ns"], e["name"]) for e in s["events"]) == sorted((t, n) for t, n, _ in w["events"])
        for e in s["events"]:  # provenance travels with every event
            assert e["attributes"]["dnpc.source"] and e["attributes"]["dnpc.line"] is not None
        assert sorted(lk["span_id"] for lk in s["links"]) == sorted(lsid for lsid, _ in w["links"])

    # the UI's view: the parent is the CHILD_OF reference, links are FOLLOWS_FROM (a second parent:
    # CHILD_OF, decided in contexts._links), events are logs stamped in microseconds
    legacy = jaeger.trace_legacy(trace_id)
    assert len(legacy["spans"]) == len(want)
    for s in legacy["spans"]:
        w = want[s["spanID"]]
        refs = [(r["refType"], r["spanID"]) for r in s.get("references", [])]
        expected_refs = [("CHILD_OF", w["parent_span_id"])] if w["parent_span_id"] else []
        for lsid, attrs in w["links"]:
            kind = "CHILD_OF" if attrs["opentracing.ref_type"] == "child_of" else "FOLLOWS_FROM"
            expected_refs.append((kind, lsid))
        assert sorted(refs) == sorted(expected_refs)
        assert sorted(log["timestamp"] for log in s.get("logs", [])) == sorted(t // 1000 for t, _, _ in w["events"])
        assert legacy["processes"][s["processID"]]["serviceName"] == w["service_name"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_corpus_runs_through_jaeger(jaeger, tmp_path, protocol):
    jaeger.restart()  # empty memory storage: the other protocol's test sent the same traces
    endpoint = jaeger.otlp_grpc_endpoint if protocol == "grpc" else jaeger.otlp_http_endpoint
    for run in corpus_runs():
        db = tmp_path / f"{run.parent.name}.duckdb"
        proc = subprocess.run(
            [sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb", str(db),
             "--otlp-endpoint", endpoint, "--otlp-protocol", protocol, "-q"],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        for tid in trace_ids(db):
            assert_trace_in_jaeger(jaeger, db, tid)
    assert "parsl.dfk" in jaeger.services() and "parsl.provider" in jaeger.services()


def test_fresh_parsl_run_through_jaeger(jaeger, fresh_htex, tmp_path):
    jaeger.restart()
    db = tmp_path / "fresh.duckdb"
    replay(fresh_htex, db)
    export(db, OtlpConfig.from_env(jaeger.otlp_http_endpoint, "http/protobuf"))
    (tid,) = trace_ids(db)
    assert_trace_in_jaeger(jaeger, db, tid)


def many_runs(tmp_path: Path, copies: int) -> Path:
    """A run_dir of `copies` runs made from one real run, each with its own run id (logs only)."""
    src = next(p for p in corpus_runs() if (p / "000" / "parsl.log").exists()) / "000"
    text = (src / "parsl.log").read_text()
    old = re.search(r"Run id is: ([0-9a-f-]+)", text).group(1)
    root = tmp_path / "runinfo"
    for i in range(copies):
        run = root / f"{i:03d}"
        run.mkdir(parents=True)
        (run / "parsl.log").write_text(text.replace(old, f"00000000-0000-4000-8000-{i:012d}"))
    return root


def test_export_larger_than_the_receive_limit_is_split(jaeger, tmp_path):
    """Jaeger told to accept 1 MiB per gRPC message; the export is several times that."""
    db = tmp_path / "many.duckdb"
    replay(many_runs(tmp_path, 40), db)
    jaeger.stop()
    jaeger.extra_env["JAEGER_OTLP_GRPC_MAX_RECV_MIB"] = "1"
    jaeger.start()
    try:
        # the first attempt sends 3.5 MiB requests: Jaeger refuses them, they are halved until accepted
        result = export(db, OtlpConfig.from_env(jaeger.otlp_grpc_endpoint, "grpc"))
        assert result.bytes > 2 * 1024 * 1024
        assert result.splits >= 1 and result.requests >= 3
        for tid in trace_ids(db):
            assert_trace_in_jaeger(jaeger, db, tid)
    finally:
        jaeger.stop()
        jaeger.extra_env.pop("JAEGER_OTLP_GRPC_MAX_RECV_MIB", None)
        jaeger.start()


def test_jaeger_restarted_during_export(jaeger, tmp_path):
    """Jaeger goes away mid-export and comes back: the exporter retries and every span arrives."""
    db = tmp_path / "restart.duckdb"
    replay(many_runs(tmp_path, 4), db)
    jaeger.stop()
    restarter = threading.Timer(2.0, jaeger.start)
    restarter.start()
    try:
        result = export(db, OtlpConfig.from_env(jaeger.otlp_http_endpoint, "http/protobuf", retry_for_s=60))
    finally:
        restarter.join()
    assert result.retries >= 1
    for tid in trace_ids(db):
        assert_trace_in_jaeger(jaeger, db, tid)


def test_jaeger_down_then_resume_with_export(jaeger, tmp_path):
    """Receiver down for good: one clear error naming the resume command; the DuckDB file is complete."""
    run = corpus_runs()[0]
    db = tmp_path / "down.duckdb"
    jaeger.stop()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dnpc2otel.cli", "replay", str(run), "--duckdb", str(db), "-q",
             "--otlp-endpoint", jaeger.otlp_http_endpoint, "--otlp-retry-seconds", "2"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        jaeger.start()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "dnpc2otel export" in lines[0], proc.stderr
    reference = tmp_path / "reference.duckdb"
    replay(run, reference)
    for table in ("spans", "span_events", "span_links"):
        q = f"SELECT * FROM {table} ORDER BY ALL"
        with duckdb.connect(str(db), read_only=True) as a, duckdb.connect(str(reference), read_only=True) as b:
            assert a.execute(q).fetchall() == b.execute(q).fetchall()
    # the hint's command, run as given, delivers everything
    command = lines[0].split("resume with: ", 1)[1].split()
    assert command[:2] == ["dnpc2otel", "export"]
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *command[1:]], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for tid in trace_ids(db):
        assert_trace_in_jaeger(jaeger, db, tid)


def test_jaeger_script_is_pinned():
    script = (Path(__file__).resolve().parent.parent / "scripts" / "jaeger.sh").read_text()
    assert re.search(r'^JAEGER_MODULE_VERSION="v\d+\.\d+\.\d+"', script, re.M)
    assert shutil.which("bash")
