"""The hand-written OTLP wire format decodes, with the protobuf library, to the messages that library builds."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import CORPUS
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from dnpc2otel import replay
from dnpc2otel.export import otlp_wire as wire
from dnpc2otel.export.otlp import Selection, _Reader, batches


def pb_value(v) -> common_pb2.AnyValue:
    """The reference: AnyValue as the exporter built it with the protobuf library."""
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[pb_value(x) for x in v]))
    if isinstance(v, dict):
        return common_pb2.AnyValue(string_value=json.dumps(v, sort_keys=True))
    return common_pb2.AnyValue(string_value="" if v is None else str(v))


def pb_attrs(d: dict) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=pb_value(v)) for k, v in d.items() if v is not None]


@pytest.mark.parametrize("value", [0, 1, -1, 127, 128, -(2**63), 2**63 - 1, 0.0, -2.5, 1e300, True, False, "",
                                   "é ✓ \U0001f600", "x" * 300, [], [1, "a", 2.5, False, [3]], {"b": 1, "a": [2]}])
def test_any_value_decodes_as_the_library_builds_it(value):
    kv = common_pb2.KeyValue.FromString(wire.key_value("k", value))
    assert kv == common_pb2.KeyValue(key="k", value=pb_value(value))


def test_span_fields_decode_identically():
    attrs = {"a": 1, "b": None, "c": "x", "d": [1, 2], "e": {"z": 1}}
    body = wire.span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", None, "task", 5, 0, attrs, "ERROR",
                     "ValueError", [wire.event(7, "launched", '{"n": 3}'), wire.event(0, "", None)],
                     [wire.link("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7", '{"r": "dep"}')])
    want = trace_pb2.Span(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), span_id=bytes.fromhex("b7ad6b7169203331"),
        name="task", kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=5, end_time_unix_nano=5,
        attributes=pb_attrs(attrs), status=trace_pb2.Status(code=2, message="ValueError"),
        events=[trace_pb2.Span.Event(time_unix_nano=7, name="launched", attributes=pb_attrs({"n": 3})),
                trace_pb2.Span.Event()],
        links=[trace_pb2.Span.Link(trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
                                   span_id=bytes.fromhex("00f067aa0ba902b7"), attributes=pb_attrs({"r": "dep"}))])
    got = trace_pb2.Span.FromString(body)
    assert got == want
    assert got.HasField("status")  # as the library writes it: present even when UNSET


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("wire") / "run.duckdb"
    replay(CORPUS / "htex-2026" / "runinfo", out)
    return out


def test_every_span_of_a_real_run_decodes_as_built_from_its_rows(replayed):
    """Each span of the export, decoded, equals the span the protobuf library builds from the same rows."""
    con = duckdb.connect(str(replayed), read_only=True)
    rows = {r[1]: r for r in con.execute(
        "SELECT trace_id, span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, status_code, "
        "status_message, attributes::VARCHAR FROM spans").fetchall()}
    events: dict[str, list] = {}
    for sid, t, name, a in con.execute("SELECT span_id, time_unix_nano, name, attributes::VARCHAR FROM span_events "
                                       "ORDER BY span_id, time_unix_nano, name, attributes::VARCHAR").fetchall():
        events.setdefault(sid, []).append(trace_pb2.Span.Event(time_unix_nano=t, name=name,
                                                               attributes=pb_attrs(json.loads(a))))
    links: dict[str, list] = {}
    for sid, lt, ls, a in con.execute("SELECT span_id, linked_trace_id, linked_span_id, attributes::VARCHAR "
                                      "FROM span_links ORDER BY span_id, linked_span_id, attributes::VARCHAR"
                                      ).fetchall():
        links.setdefault(sid, []).append(trace_pb2.Span.Link(trace_id=bytes.fromhex(lt), span_id=bytes.fromhex(ls),
                                                             attributes=pb_attrs(json.loads(a))))
    con.close()
    reader = _Reader(replayed, "run")
    try:
        got = list(batches(reader.spans(Selection(None, None)), 50, 10**8))
    finally:
        reader.close()
    seen = 0
    for batch in got:
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(batch.body())
        for rs in req.resource_spans:
            res = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert res["service.name"] and res["telemetry.sdk.name"] == "dnpc2otel"
            for ss in rs.scope_spans:
                assert ss.scope.name == "dnpc2otel"
                for s in ss.spans:
                    tid, sid, parent, name, start, end, code, message, attrs = rows[s.span_id.hex()]
                    want = trace_pb2.Span(
                        trace_id=bytes.fromhex(tid), span_id=bytes.fromhex(sid),
                        parent_span_id=bytes.fromhex(parent) if parent else b"", name=name,
                        kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=max(start or 0, 0),
                        end_time_unix_nano=max(end or start or 0, 0), attributes=pb_attrs(json.loads(attrs)),
                        status=trace_pb2.Status(code={"UNSET": 0, "OK": 1, "ERROR": 2}[code or "UNSET"],
                                                message=message or ""),
                        events=events.get(sid, []), links=links.get(sid, []))
                    assert s == want
                    seen += 1
    assert seen == len(rows) and len(got) == -(-len(rows) // 50)


@pytest.mark.parametrize("text", [
    '{"a":"x","dnpc.line":12,"b":1.5}', '{"dnpc.line":7}', '{"a":{"dnpc.line":3},"b":2}',
    '{"a":"q\\",\\"dnpc.line\\":4","dnpc.line":5}', '{"dnpc.line":-3,"a":1}', '{"dnpc.line":99999999999999999999}',
    '{"dnpc.line":1.0}', '{"dnpc.line":2,"x":{"dnpc.line":3}}', '{"a":1,"dnpc.line":8,"c":null,"d":[1]}',
])
def test_event_attribute_blocks_cut_at_the_line_decode_as_parsed(text):
    """The cached halves around `dnpc.line` (otlp_wire.attributes_json), twice (miss, then hit), equal the
    KeyValues of the decoded JSON, also for texts that only look like such a block."""
    def value(v):  # beyond int64 the library raises; the exporter sends the digits as text
        return pb_value(str(v) if isinstance(v, int) and not -2**63 <= v < 2**63 else v)

    want = [(k, value(v)) for k, v in json.loads(text).items() if v is not None]
    for _ in range(2):
        got = trace_pb2.Span.Event.FromString(wire.attributes_json(b"\x1a", text)).attributes
        assert [(kv.key, kv.value) for kv in got] == want
