"""Self-test of the `jaeger` fixture against a real Jaeger v2, using the OpenTelemetry SDK.

Also pins down Jaeger behaviours dnpc2otel relies on (link -> reference mapping,
receive limits), so a Jaeger upgrade that changes them shows up here.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from jaeger_fixture import normalize_span_id, normalize_trace_id

pytestmark = pytest.mark.slow  # starts a Jaeger server (see pyproject markers)

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.trace import Link, Status, StatusCode  # noqa: E402


def _hex_tid(ctx) -> str:
    return f"{ctx.trace_id:032x}"


def _hex_sid(ctx) -> str:
    return f"{ctx.span_id:016x}"


def _provider(exporter, service: str) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    # SimpleSpanProcessor exports synchronously when each span ends; the Jaeger config has
    # no batch processor, so a successful export means the span is already queryable.
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def _emit_trace(tp: TracerProvider):
    """root -> {sibling, child}; child has attributes, an event, a link to sibling, ERROR."""
    tracer = tp.get_tracer("dnpc2otel.selftest")
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("sibling") as sibling:
            pass
        with tracer.start_as_current_span(
            "child",
            attributes={"parsl.task_id": 7, "parsl.app": "hello", "ok": True, "ratio": 0.5},
            links=[Link(sibling.get_span_context(), {"link.kind": "depends_on"})],
        ) as child:
            child.add_event("task_launched", {"executor": "htex"})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    tp.shutdown()
    return root.get_span_context(), sibling.get_span_context(), child.get_span_context()


def _check_roundtrip(jaeger, service, root_ctx, sibling_ctx, child_ctx):
    tid = _hex_tid(root_ctx)
    spans = jaeger.wait_for_spans(tid, 3, timeout=30)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"root", "sibling", "child"}

    root, child = by_name["root"], by_name["child"]
    assert root["parent_span_id"] == ""
    assert root["span_id"] == _hex_sid(root_ctx)
    assert child["trace_id"] == tid
    assert child["span_id"] == _hex_sid(child_ctx)
    assert child["parent_span_id"] == _hex_sid(root_ctx)
    assert child["service_name"] == service
    assert child["attributes"] == {
        "parsl.task_id": 7,
        "parsl.app": "hello",
        "ok": True,
        "ratio": 0.5,
    }
    assert child["status_code"] == "ERROR"
    assert child["status_message"] == "boom"
    assert root["start_ns"] <= child["start_ns"] <= child["end_ns"] <= root["end_ns"]
    assert [e["name"] for e in child["events"]] == ["task_launched"]
    assert child["events"][0]["attributes"] == {"executor": "htex"}
    assert child["start_ns"] <= child["events"][0]["time_ns"] <= child["end_ns"]
    assert child["links"] == [
        {
            "trace_id": tid,
            "span_id": _hex_sid(sibling_ctx),
            "attributes": {"link.kind": "depends_on"},
        }
    ]

    # Legacy (v1 / UI) API: parent -> CHILD_OF reference, plain OTLP link -> FOLLOWS_FROM.
    legacy = jaeger.trace_legacy(tid)
    assert legacy["traceID"] == tid
    lspans = {s["operationName"]: s for s in legacy["spans"]}
    lchild = lspans["child"]
    assert lchild["spanID"] == _hex_sid(child_ctx)
    assert lchild["references"] == [
        {"refType": "CHILD_OF", "traceID": tid, "spanID": _hex_sid(root_ctx)},
        {"refType": "FOLLOWS_FROM", "traceID": tid, "spanID": _hex_sid(sibling_ctx)},
    ]
    assert lspans["root"]["references"] == []
    tags = {t["key"]: t["value"] for t in lchild["tags"]}
    assert tags["parsl.task_id"] == 7 and tags["parsl.app"] == "hello"
    assert tags["otel.status_code"] == "ERROR"
    assert lchild["startTime"] == child["start_ns"] // 1000  # microseconds
    [log] = lchild["logs"]
    fields = {f["key"]: f["value"] for f in log["fields"]}
    assert fields == {"event": "task_launched", "executor": "htex"}
    assert legacy["processes"][lchild["processID"]]["serviceName"] == service
    assert service in jaeger.services()


def test_otlp_http_roundtrip(jaeger):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_endpoint}/v1/traces", timeout=10)
    ctxs = _emit_trace(_provider(exporter, "selftest-http"))
    _check_roundtrip(jaeger, "selftest-http", *ctxs)


def test_otlp_grpc_roundtrip(jaeger):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True, timeout=10)
    ctxs = _emit_trace(_provider(exporter, "selftest-grpc"))
    _check_roundtrip(jaeger, "selftest-grpc", *ctxs)


def _post_otlp_json(jaeger, doc: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"{jaeger.otlp_http_endpoint}/v1/traces",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _raw_span(tid, sid, name, parent="", links=(), now=None, **extra):
    now = now or time.time_ns()
    return {
        "traceId": tid,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1000),
        "links": [
            {
                "traceId": lt,
                "spanId": ls,
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in la.items()],
            }
            for lt, ls, la in links
        ],
        **extra,
    }


def _raw_doc(service, spans):
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "raw"}, "spans": spans}],
            }
        ]
    }


def test_link_ref_type_mapping(jaeger):
    """How OTLP links appear in /api/traces (documents Jaeger's translator behaviour).

    A link with attribute opentracing.ref_type=child_of becomes a CHILD_OF reference;
    any other link (no attribute, or follows_from) becomes FOLLOWS_FROM. In the v3 API the
    link keeps its attributes and the span's parentSpanId is untouched.
    """
    tid = "0123456789abcdef0123456789abcdef"
    r, a, b = "1111111111111111", "2222222222222222", "3333333333333333"
    spans = [
        _raw_span(tid, r, "R"),
        # no parent, but linked with ref_type=child_of to R
        _raw_span(tid, a, "A", links=[(tid, r, {"opentracing.ref_type": "child_of"})]),
        _raw_span(
            tid,
            b,
            "B",
            parent=r,
            links=[
                (tid, a, {"opentracing.ref_type": "follows_from"}),
                (tid, a, {"note": "plain"}),
            ],
        ),
    ]
    status, body = _post_otlp_json(jaeger, _raw_doc("selftest-links", spans))
    assert status == 200, body

    v3 = {s["name"]: s for s in jaeger.wait_for_spans(tid, 3)}
    assert v3["A"]["parent_span_id"] == ""
    assert v3["A"]["links"] == [
        {"trace_id": tid, "span_id": r, "attributes": {"opentracing.ref_type": "child_of"}}
    ]

    legacy = {s["operationName"]: s for s in jaeger.trace_legacy(tid)["spans"]}
    assert legacy["R"]["references"] == []
    assert legacy["A"]["references"] == [{"refType": "CHILD_OF", "traceID": tid, "spanID": r}]
    assert legacy["B"]["references"] == [
        {"refType": "CHILD_OF", "traceID": tid, "spanID": r},
        {"refType": "FOLLOWS_FROM", "traceID": tid, "spanID": a},
        {"refType": "FOLLOWS_FROM", "traceID": tid, "spanID": a},
    ]


def test_http_body_limit(jaeger):
    """OTLP/HTTP bodies above 4 MiB are rejected with 400 (not 413)."""
    tid = "00000000000000000000000000000abc"
    pad = {"key": "pad", "value": {"stringValue": "x" * (4 * 1024 * 1024 + 1)}}
    doc = _raw_doc("selftest-limit", [_raw_span(tid, "0000000000000001", "big", attributes=[pad])])
    status, body = _post_otlp_json(jaeger, doc)
    assert status == 400, body
    assert b"request body too large" in body


def test_restart_same_ports(jaeger):
    """stop()/start() keeps the ports; memory storage starts empty again."""
    tid = "00000000000000000000000000000def"
    ports = (jaeger.otlp_grpc_port, jaeger.otlp_http_port, jaeger.query_http_port)
    status, _ = _post_otlp_json(
        jaeger, _raw_doc("selftest-restart", [_raw_span(tid, "00000000000000aa", "s")])
    )
    assert status == 200
    jaeger.wait_for_spans(tid, 1)
    jaeger.stop()
    assert not jaeger.running
    jaeger.start()
    assert (jaeger.otlp_grpc_port, jaeger.otlp_http_port, jaeger.query_http_port) == ports
    assert jaeger.wait_for_spans(tid, 0) == []  # data gone
    status, _ = _post_otlp_json(
        jaeger, _raw_doc("selftest-restart", [_raw_span(tid, "00000000000000bb", "s2")])
    )
    assert status == 200
    assert [s["span_id"] for s in jaeger.wait_for_spans(tid, 1)] == ["00000000000000bb"]


def test_id_normalisation():
    raw = bytes(range(16))
    assert normalize_trace_id(base64.b64encode(raw).decode()) == raw.hex()
    assert normalize_trace_id(raw.hex().upper()) == raw.hex()
    assert normalize_trace_id(0xABC) == "0" * 29 + "abc"
    assert normalize_span_id(base64.b64encode(raw[:8]).decode()) == raw[:8].hex()
    assert normalize_span_id("") == ""


def test_grpc_limit_configurable(jaeger):
    """JAEGER_OTLP_GRPC_MAX_RECV_MIB lowers the gRPC limit; oversize => RESOURCE_EXHAUSTED."""
    grpc = pytest.importorskip("grpc")
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    from opentelemetry.proto.trace.v1 import trace_pb2

    def export(pad_bytes: int):
        span = trace_pb2.Span(
            trace_id=bytes(range(16)), span_id=bytes(range(8)), name="pad", start_time_unix_nano=1
        )
        span.attributes.add(key="pad").value.string_value = "x" * pad_bytes
        req = trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
        )
        with grpc.insecure_channel(jaeger.otlp_grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            try:
                stub.Export(req, timeout=10)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()

    assert export(2 * 1024 * 1024) == grpc.StatusCode.OK  # default limit: 4 MiB
    jaeger.extra_env["JAEGER_OTLP_GRPC_MAX_RECV_MIB"] = "1"
    try:
        jaeger.restart()
        assert export(2 * 1024 * 1024) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert export(512 * 1024) == grpc.StatusCode.OK
    finally:
        del jaeger.extra_env["JAEGER_OTLP_GRPC_MAX_RECV_MIB"]
        jaeger.restart()
    assert export(5 * 1024 * 1024) == grpc.StatusCode.RESOURCE_EXHAUSTED  # back to 4 MiB
