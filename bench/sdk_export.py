"""The OpenTelemetry SDK's way of exporting the same spans, to compare `dnpc2otel export` against.

    python bench/sdk_export.py DB ENDPOINT     # prints a JSON object

The spans, events and links of a dnpc2otel DuckDB file become opentelemetry.sdk.trace.ReadableSpan objects
(what a BatchSpanProcessor hands its exporter), in batches of the SDK's default 512; each batch is encoded
by the SDK's OTLP encoder (opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans),
serialized and posted (a requests session, as the SDK's OTLP/HTTP exporter does) to ENDPOINT/v1/traces.
Each step is timed on its own.
"""

from __future__ import annotations

import json
import sys
import time

import duckdb
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

BATCH = 512  # BatchSpanProcessor's default max_export_batch_size

# one trace (run) at a time, so that memory follows a run, not the database
QUERY = """
WITH ev AS (
    SELECT span_id,
           list({'t': time_unix_nano, 'name': name, 'a': attributes::VARCHAR} ORDER BY time_unix_nano, name) AS events
    FROM span_events WHERE trace_id = $trace GROUP BY ALL
), lk AS (
    SELECT span_id, list({'trace_id': linked_trace_id, 'span_id': linked_span_id, 'a': attributes::VARCHAR}) AS links
    FROM span_links WHERE trace_id = $trace GROUP BY ALL
)
SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name,
       (SELECT max(service_namespace) FROM runs WHERE trace_id = $trace), s.start_time_unix_nano,
       s.end_time_unix_nano, s.status_code, s.status_message, s.attributes::VARCHAR, ev.events, lk.links
FROM spans s LEFT JOIN ev USING (span_id) LEFT JOIN lk USING (span_id)
WHERE s.trace_id = $trace
"""

_PRIMITIVE = (str, bool, int, float)
SCOPE = InstrumentationScope("dnpc2otel-bench", "0")
_STATUS = {"ERROR": StatusCode.ERROR, "OK": StatusCode.OK}


def attributes(text: str | None) -> dict:
    """The SDK takes primitives and homogeneous sequences of them; anything else travels as JSON text."""
    out = {}
    for k, v in (json.loads(text) if text else {}).items():
        if v is None:
            continue
        if isinstance(v, list) and v and all(isinstance(x, type(v[0])) and isinstance(x, _PRIMITIVE) for x in v):
            out[k] = tuple(v)
        elif isinstance(v, _PRIMITIVE):
            out[k] = v
        else:
            out[k] = json.dumps(v, sort_keys=True)
    return out


def context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1))


def build(row: tuple, resources: dict) -> ReadableSpan:
    (trace_id, span_id, parent, name, service, namespace, start, end, status, message, attrs, events, links) = row
    key = (service or "dnpc2otel", namespace)
    resource = resources.get(key)
    if resource is None:
        resource = resources[key] = Resource({"service.name": key[0], "service.namespace": namespace or ""})
    code = _STATUS.get(status or "", StatusCode.UNSET)
    return ReadableSpan(
        name=name,
        context=context(trace_id, span_id),
        parent=context(trace_id, parent) if parent else None,
        resource=resource,
        attributes=attributes(attrs),
        events=[Event(e["name"], attributes(e["a"]), int(e["t"])) for e in events or []],
        links=[Link(context(lk["trace_id"], lk["span_id"]), attributes(lk["a"])) for lk in links or []],
        kind=SpanKind.INTERNAL,
        status=Status(code, message if code is StatusCode.ERROR else None),
        start_time=max(int(start or 0), 0),
        end_time=max(int(end or start or 0), 0),
        instrumentation_scope=SCOPE,
    )


def _batches(con: duckdb.DuckDBPyConnection, traces: list[str]):
    """(rows, seconds DuckDB took for them): BATCH spans at a time."""
    for trace in traces:
        t = time.perf_counter()
        cur = con.execute(QUERY, {"trace": trace})
        while True:
            rows = cur.fetchmany(BATCH)
            took, t = time.perf_counter() - t, time.perf_counter()
            if not rows:
                break
            yield rows, took
            t = time.perf_counter()


def main() -> int:
    db, endpoint = sys.argv[1], sys.argv[2].rstrip("/") + "/v1/traces"
    steps = dict.fromkeys(("query", "build", "encode", "serialize", "post"), 0.0)
    spans = events = links = requests_sent = sent = 0
    resources: dict = {}
    session = requests.Session()
    started = time.perf_counter()
    con = duckdb.connect(db, read_only=True)
    con.execute("SET enable_progress_bar = false")
    traces = [t for (t,) in con.execute("SELECT DISTINCT trace_id FROM spans ORDER BY 1").fetchall()]
    for rows, took in _batches(con, traces):
        steps["query"] += took
        t = time.perf_counter()
        batch = [build(r, resources) for r in rows]
        steps["build"] += time.perf_counter() - t
        t = time.perf_counter()
        request = encode_spans(batch)
        steps["encode"] += time.perf_counter() - t
        t = time.perf_counter()
        body = request.SerializeToString()
        steps["serialize"] += time.perf_counter() - t
        t = time.perf_counter()
        resp = session.post(endpoint, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=60)
        resp.raise_for_status()
        steps["post"] += time.perf_counter() - t
        spans += len(batch)
        events += sum(len(s.events) for s in batch)
        links += sum(len(s.links) for s in batch)
        requests_sent += 1
        sent += len(body)
    con.close()
    print(json.dumps({"spans": spans, "events": events, "links": links, "requests": requests_sent, "bytes": sent,
                      **{f"{k}_s": round(v, 3) for k, v in steps.items()},
                      "total_s": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
