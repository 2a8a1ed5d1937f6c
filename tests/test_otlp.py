"""OTLP export reaches a receiver intact: ids, parents, links, events, times, attributes, status."""

from __future__ import annotations

import json
import socket

import duckdb
import pytest
from conftest import corpus_runs
from otlp_receiver import GrpcReceiver, HttpReceiver

from dnpc2otel import replay
from dnpc2otel.errors import UserError
from dnpc2otel.export.otlp import ExportError, OtlpConfig, export


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("otlp") / "run.duckdb"
    replay(corpus_runs()[0], out)
    return out


def expected(db) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    spans = {}
    for r in con.execute("SELECT * FROM spans").fetchall():
        cols = [d[0] for d in con.description]
        spans[r[1]] = dict(zip(cols, r, strict=True))
    for sid, t, name in con.execute("SELECT span_id, time_unix_nano, name FROM span_events").fetchall():
        spans[sid].setdefault("events", []).append((t, name))
    for sid, lsid, attrs in con.execute("SELECT span_id, linked_span_id, attributes FROM span_links").fetchall():
        spans[sid].setdefault("links", []).append((lsid, json.loads(attrs)["dnpc.relation"]))
    con.close()
    return spans


def assert_intact(db, received) -> None:
    want = expected(db)
    got = received.spans()
    ids = [g["span"].span_id.hex() for g in got]
    assert len(ids) == len(set(ids)), "a span arrived twice"
    assert set(ids) == set(want), "spans lost or invented"
    status = {0: "UNSET", 1: "OK", 2: "ERROR"}
    for g in got:
        s, w = g["span"], want[g["span"].span_id.hex()]
        assert s.trace_id.hex() == w["trace_id"]
        assert (s.parent_span_id.hex() or None) == w["parent_span_id"]
        assert s.name == w["name"] and g["service"] == w["service_name"]
        assert (s.start_time_unix_nano, s.end_time_unix_nano) == (w["start_time_unix_nano"], w["end_time_unix_nano"])
        assert status[s.status.code] == w["status_code"]
        attrs = {a.key for a in s.attributes}
        assert attrs == set(json.loads(w["attributes"]))
        assert sorted((e.time_unix_nano, e.name) for e in s.events) == sorted(w.get("events", []))
        links = sorted(
            (lk.span_id.hex(), next(a.value.string_value for a in lk.attributes if a.key == "dnpc.relation"))
            for lk in s.links
        )
        assert links == sorted(w.get("links", []))


def test_http_export_is_intact(replayed):
    with HttpReceiver() as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
    assert result.spans == len(rx.received.spans())
    assert_intact(replayed, rx.received)
    # the failed tries arrive with an error status and the exception type
    errors = [g["span"] for g in rx.received.spans() if g["span"].status.code == 2 and g["span"].name == "try"]
    assert errors and all(e.status.message for e in errors)


def test_grpc_export_is_intact(replayed):
    with GrpcReceiver() as rx:
        export(replayed, OtlpConfig.from_env(rx.endpoint, "grpc"))
    assert_intact(replayed, rx.received)


def test_large_export_is_split_under_the_receivers_limit(replayed):
    """A receive limit far below the run's size: requests are split so that every span arrives."""
    limit = 20_000
    with GrpcReceiver(max_receive_bytes=limit) as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "grpc", max_request_bytes=limit - 1000))
    assert result.requests > 3
    assert max(rx.received.sizes) <= limit
    assert_intact(replayed, rx.received)


def test_http_413_halves_the_request(replayed):
    with HttpReceiver(max_bytes=30_000) as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf", max_request_bytes=10**8))
    assert rx.received.refused >= 1 and result.splits >= 1
    assert_intact(replayed, rx.received)


def test_unavailable_receiver_is_retried(replayed):
    with HttpReceiver(fail_first=2) as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
    assert result.retries == 2
    assert_intact(replayed, rx.received)


def test_unreachable_receiver_gives_resume_hint(replayed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    cfg = OtlpConfig.from_env(f"http://127.0.0.1:{port}", "http/protobuf", retry_for_s=1.0)
    with pytest.raises(ExportError) as e:
        export(replayed, cfg)
    assert "dnpc2otel export" in str(e.value) and str(port) in str(e.value)


def test_environment_variables_choose_the_endpoint(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x,team=hpc")
    cfg = OtlpConfig.from_env()
    assert cfg.endpoint == "http://collector:4318/v1/traces"
    assert cfg.headers == {"authorization": "Bearer x", "team": "hpc"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/custom")
    assert OtlpConfig.from_env().endpoint == "http://other:9999/custom"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert OtlpConfig.from_env().protocol == "grpc"
    assert OtlpConfig.from_env().endpoint == "http://collector:4318/"
    assert OtlpConfig.from_env("127.0.0.1:4318", "http/protobuf").endpoint == "http://127.0.0.1:4318/v1/traces"


def test_a_sort_over_the_memory_limit_falls_back_and_stays_intact(replayed):
    # at 10^6 tasks the events' sort overflowed the export's limit on two threads, the task-mode links' on one:
    # the sort is redone on one thread, then from the view's rows written unsorted, then with LARGE_LIMIT;
    # past that, one error line
    connect, seen = duckdb.connect, []

    class Tight:  # a connection whose first `fails` sorts into the export's files run out of memory
        def __init__(self, con, fails):
            self._con, self._fails = con, fails

        def execute(self, sql, *args):
            if sql.startswith("COPY") and ".raw.parquet' (" not in sql and "ORDER BY" in sql:
                seen.append(sql)
                if len(seen) <= self._fails:
                    raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate (test)")
            return self._con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._con, name)

    for fails in (1, 2, 3):
        seen.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(duckdb, "connect", lambda *a, fails=fails, **k: Tight(connect(*a, **k), fails))
            with HttpReceiver() as rx:
                result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
        assert result.spans == len(rx.received.spans()) > 0 and len(seen) == fails + 3
        assert_intact(replayed, rx.received)
    seen.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(duckdb, "connect", lambda *a, **k: Tight(connect(*a, **k), 4))
        with HttpReceiver() as rx, pytest.raises(UserError, match="needed more than 1GB of memory even on one"):
            export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))


def test_a_span_with_more_events_than_the_limit_sends_the_first(replayed, monkeypatch):
    """A worker's span at 10^6 tasks holds 10^6 events, more than a receiver takes in one request: each span
    sends its first events and links (in time and key order) up to the limits, the SDKs' variables raise them,
    and dropped_events_count / dropped_links_count say how many more there are."""
    from dnpc2otel.export.otlp import _Reader

    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "1")
    with HttpReceiver() as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
    want = expected(replayed)
    got = {g["span"].span_id.hex(): g["span"] for g in rx.received.spans()}
    assert set(got) == set(want)
    capped = events_dropped = links_dropped = 0
    for sid, s in got.items():
        evs, lks = sorted(want[sid].get("events", [])), want[sid].get("links", [])
        assert [(e.time_unix_nano, e.name) for e in s.events] == evs[:2]
        assert s.dropped_events_count == max(len(evs) - 2, 0)
        assert len(s.links) == min(len(lks), 1) and s.dropped_links_count == max(len(lks) - 1, 0)
        capped += len(evs) > 2 or len(lks) > 1
        events_dropped += s.dropped_events_count
        links_dropped += s.dropped_links_count
    assert capped and events_dropped and links_dropped
    assert (result.capped_spans, result.dropped_events, result.dropped_links) == (capped, events_dropped,
                                                                                  links_dropped)
    assert any(f"{capped:,} spans had more than 2 events or 1 links" in line
               for line in result.report(OtlpConfig.from_env(rx.endpoint, "http/protobuf")))
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "many")
    with pytest.raises(UserError, match="OTEL_SPAN_EVENT_COUNT_LIMIT='many': not a positive number"):
        _Reader(replayed, "run")


def test_the_limits_never_drop_what_a_run_has(replayed):
    """At the default limits the corpus run is sent whole (test_http_export_is_intact), and no span says it
    dropped anything."""
    with HttpReceiver() as rx:
        result = export(replayed, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
    assert result.capped_spans == 0
    assert all(g["span"].dropped_events_count == 0 == g["span"].dropped_links_count for g in rx.received.spans())
