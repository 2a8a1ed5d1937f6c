"""OTLP exporter: spans, events and links of a dnpc2otel DuckDB file → an OTLP receiver (HTTP or gRPC).

It knows spans and nothing of Parsl. Requests are built directly as OTLP protobuf from the database
(no SDK span objects), split so that no request exceeds `max_request_bytes` (receivers reject larger
messages: Jaeger's and the Collector's gRPC default is 4 MiB), and retried with exponential backoff
while the receiver is unavailable. Export reads the database only, so it can be re-run at any time:
`dnpc2otel export DB`.

Where it sends is `otlp_config.OtlpConfig`. The service namespace of each run comes from the `runs` table
(the workflow system's declaration), not from this module.

Resources: one per process and service. Each span names its process by `service.instance.id`; the process's
own span (marked `dnpc.process`, see reconcile/spans.py) holds the process's OpenTelemetry resource
attributes — `host.*`, `os.*`, `process.*`, `service.version` — which become the resource of every span of
that process, beside `service.name` and `service.namespace`. The spans keep all their attributes.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from .. import __version__
from ..errors import UserError, first_line
from .otlp_config import ExportError, OtlpConfig, require_listener

__all__ = ["ExportError", "ExportResult", "OtlpConfig", "export"]

_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
# span attributes of a process's span that describe the process: its OTLP resource (OTel semantic conventions)
RESOURCE_PREFIXES = ("host.", "os.", "process.")
RESOURCE_KEYS = ("service.version", "service.instance.id")

# ---------------------------------------------------------------------- protobuf from rows
def any_value(v) -> common_pb2.AnyValue:
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return common_pb2.AnyValue(string_value=json.dumps(v, sort_keys=True))
    return common_pb2.AnyValue(string_value="" if v is None else str(v))


def key_values(attrs: str | dict | None) -> list[common_pb2.KeyValue]:
    if not attrs:
        return []
    d = json.loads(attrs) if isinstance(attrs, str) else attrs
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in d.items() if v is not None]


def resource_attributes(attrs: dict) -> dict:
    """The attributes of a process's span that belong on its resource."""
    return {k: v for k, v in attrs.items()
            if v is not None and (k in RESOURCE_KEYS or k.startswith(RESOURCE_PREFIXES))}


def _span(row: dict) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=bytes.fromhex(row["trace_id"]),
        span_id=bytes.fromhex(row["span_id"]),
        parent_span_id=bytes.fromhex(row["parent_span_id"]) if row["parent_span_id"] else b"",
        name=row["name"],
        kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=max(int(row["start_time_unix_nano"] or 0), 0),
        end_time_unix_nano=max(int(row["end_time_unix_nano"] or row["start_time_unix_nano"] or 0), 0),
        attributes=key_values(row["attributes"]),
        status=trace_pb2.Status(
            code=_STATUS.get(row["status_code"] or "UNSET", 0), message=row["status_message"] or ""
        ),
    )
    for e in row["events"] or []:
        span.events.append(
            trace_pb2.Span.Event(time_unix_nano=int(e["t"]), name=e["name"], attributes=key_values(e["a"]))
        )
    for lk in row["links"] or []:
        span.links.append(
            trace_pb2.Span.Link(
                trace_id=bytes.fromhex(lk["trace_id"]),
                span_id=bytes.fromhex(lk["span_id"]),
                attributes=key_values(lk["a"]),
            )
        )
    return span


SPANS_SQL = """
SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name, s.start_time_unix_nano,
       s.end_time_unix_nano, s.status_code, s.status_message, s.attributes::VARCHAR AS attributes,
       (SELECT max(r.service_namespace) FROM runs r WHERE r.trace_id = s.trace_id) AS service_namespace,
       (SELECT list({'t': e.time_unix_nano, 'name': e.name, 'a': e.attributes::VARCHAR}
                    ORDER BY e.time_unix_nano, e.name, e.attributes::VARCHAR)
        FROM span_events e WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id) AS events,
       (SELECT list({'trace_id': l.linked_trace_id, 'span_id': l.linked_span_id, 'a': l.attributes::VARCHAR}
                    ORDER BY l.linked_span_id, l.attributes::VARCHAR)
        FROM span_links l WHERE l.trace_id = s.trace_id AND l.span_id = s.span_id) AS links
FROM spans s WHERE_CLAUSE
ORDER BY s.trace_id, s.start_time_unix_nano, s.span_id
"""

# the spans that are processes: their resource attributes, by (trace, service.instance.id)
PROCESSES_SQL = """
SELECT s.trace_id, s.attributes::VARCHAR FROM spans s
WHERE json_extract(s.attributes, '$."dnpc.process"') IS NOT NULL WHERE_AND
"""


def _processes(con: duckdb.DuckDBPyConnection, where: str, params: list) -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    for trace_id, attributes in con.execute(PROCESSES_SQL.replace("WHERE_AND", where), params).fetchall():
        attrs = json.loads(attributes)
        instance = attrs.get("service.instance.id")
        if instance:
            out[(trace_id, instance)] = resource_attributes(attrs)
    return out


def _requests(
    con: duckdb.DuckDBPyConnection, trace_ids: list[str] | None, max_bytes: int
) -> Iterator[tuple[trace_service_pb2.ExportTraceServiceRequest, int]]:
    """Yield (request, span count), each request at most `max_bytes` (one oversized span excepted)."""
    where, params = "", []
    if trace_ids:
        where = f"s.trace_id IN ({', '.join('?' for _ in trace_ids)})"
        params = list(trace_ids)
    processes = _processes(con, f"AND {where}" if where else "", params)
    cur = con.execute(SPANS_SQL.replace("WHERE_CLAUSE", f"WHERE {where}" if where else ""), params)
    names = [d[0] for d in cur.description]
    by_service: dict[tuple[str, str | None, str], list[trace_pb2.Span]] = {}
    size = 0
    count = 0
    while True:
        rows = cur.fetchmany(2000)
        if not rows:
            break
        for r in rows:
            row = dict(zip(names, r, strict=True))
            row["attributes"] = json.loads(row["attributes"]) if row["attributes"] else {}
            span = _span(row)
            n = span.ByteSize() + 16  # field tag and length prefixes
            if count and size + n + 512 * (len(by_service) + 1) > max_bytes:
                yield _request(by_service), count
                by_service, size, count = {}, 0, 0
            instance = row["attributes"].get("service.instance.id")
            resource = processes.get((row["trace_id"], instance), {"service.instance.id": instance} if instance else {})
            process = json.dumps(resource, sort_keys=True)
            service = (row["service_name"] or "dnpc2otel", row["service_namespace"], process)
            by_service.setdefault(service, []).append(span)
            size += n
            count += 1
    if count:
        yield _request(by_service), count


def _request(
    by_service: dict[tuple[str, str | None, str], list[trace_pb2.Span]],
) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for (service, namespace, process), spans in sorted(
        by_service.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])
    ):
        resource = {"service.name": service, "service.namespace": namespace, **json.loads(process),
                    "telemetry.sdk.name": "dnpc2otel", "telemetry.sdk.version": __version__}
        rs = req.resource_spans.add(resource=resource_pb2.Resource(attributes=key_values(resource)))
        rs.scope_spans.add(
            scope=common_pb2.InstrumentationScope(name="dnpc2otel", version=__version__), spans=spans
        )
    return req


# ---------------------------------------------------------------------- transport
class _Retryable(Exception):
    def __init__(self, msg: str, after: float | None = None):
        super().__init__(msg)
        self.after = after


class _TooLarge(Exception):
    pass


def _send_http(cfg: OtlpConfig, body: bytes) -> None:
    headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"dnpc2otel/{__version__}", **cfg.headers}
    if cfg.compression == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(cfg.endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        # 413 is the standard answer; the Collector's confighttp (Jaeger v2) answers 400 "request body too large"
        if e.code == 413 or (e.code == 400 and "too large" in detail):
            raise _TooLarge(f"HTTP {e.code} {detail}") from None
        if e.code in (429, 502, 503, 504):
            after = e.headers.get("Retry-After")
            raise _Retryable(f"HTTP {e.code}", float(after) if after and after.isdigit() else None) from None
        raise ExportError(f"OTLP receiver {cfg.endpoint} refused the spans: HTTP {e.code} {detail}".strip()) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Retryable(f"{cfg.endpoint} unreachable ({reason})") from None


class _GrpcSender:
    def __init__(self, cfg: OtlpConfig):
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.grpc = grpc
        target = cfg.endpoint
        secure = target.startswith("https://")
        for scheme in ("http://", "https://", "grpc://"):
            if target.startswith(scheme):
                target = target[len(scheme):]
        target = target.rstrip("/")
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        self.channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(target, options=options)
        )
        self.stub = trace_service_pb2_grpc.TraceServiceStub(self.channel)
        self.cfg = cfg
        self.compression = grpc.Compression.Gzip if cfg.compression == "gzip" else None

    def __call__(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        grpc = self.grpc
        try:
            self.stub.Export(
                req,
                timeout=self.cfg.timeout_s,
                metadata=list(self.cfg.headers.items()) or None,
                compression=self.compression,
            )
        except grpc.RpcError as e:
            code = e.code()
            detail = e.details() or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail:
                raise _TooLarge(detail) from None
            if code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
                grpc.StatusCode.CANCELLED,
            ):
                raise _Retryable(f"{self.cfg.endpoint}: {code.name} {detail}".strip()) from None
            raise ExportError(f"OTLP receiver {self.cfg.endpoint} refused the spans: {code.name} {detail}") from None

    def close(self) -> None:
        self.channel.close()


@dataclass
class ExportResult:
    spans: int = 0
    requests: int = 0
    retries: int = 0
    splits: int = 0
    bytes: int = 0  # protobuf bytes delivered


def export(
    db_path: str | Path,
    config: OtlpConfig,
    trace_ids: list[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    resume_hint: str | None = None,
) -> ExportResult:
    """Send every span (or those of `trace_ids`) of the DuckDB file to the OTLP receiver."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise UserError(f"{db_path}: no such DuckDB file")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error as e:
        raise UserError(f"{db_path}: cannot open as a DuckDB database ({first_line(e)})") from None
    hint = resume_hint or (
        f"dnpc2otel export {db_path} --otlp-endpoint {config.endpoint} --otlp-protocol {config.protocol}"
    )
    if config.is_default:  # nobody chose this endpoint: when nothing listens there, say so now, not in a minute
        try:
            require_listener(config)
        except ExportError:
            con.close()
            raise
    result = ExportResult()
    grpc_send = _GrpcSender(config) if config.protocol == "grpc" else None

    def send(req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        if grpc_send:
            grpc_send(req)
        else:
            _send_http(config, req.SerializeToString())

    try:
        for req, n in _requests(con, trace_ids, config.max_request_bytes):
            _deliver(req, send, config, result, hint)
            result.spans += n
            if on_progress:
                on_progress(result.spans)
    finally:
        con.close()
        if grpc_send:
            grpc_send.close()
    return result


def _deliver(req, send, cfg: OtlpConfig, result: ExportResult, hint: str) -> None:
    """Send one request; split it in two when the receiver says it is too large; retry while unavailable."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            send(req)
            result.requests += 1
            result.bytes += req.ByteSize()
            return
        except _TooLarge as e:
            halves = _split(req)
            if halves is None:
                raise ExportError(f"a single span is larger than the receiver accepts ({e})") from None
            result.splits += 1
            for half in halves:
                _deliver(half, send, cfg, result, hint)
            return
        except _Retryable as e:
            if waited >= cfg.retry_for_s:
                raise ExportError(
                    f"OTLP export failed: {e} (retried for {waited:.0f} s; {cfg.why}). The DuckDB file is complete; "
                    f"when the receiver is back, resume with: {hint}"
                ) from None
            pause = min(e.after or delay, max(cfg.retry_for_s - waited, 0.1))
            time.sleep(pause)
            waited += pause
            delay = min(delay * 2, 10.0)
            result.retries += 1


def _split(req: trace_service_pb2.ExportTraceServiceRequest):
    spans = [(rs.resource, ss.scope, s) for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    if len(spans) < 2:
        return None
    half = len(spans) // 2
    out = []
    for part in (spans[:half], spans[half:]):
        r = trace_service_pb2.ExportTraceServiceRequest()
        for resource, scope, span in part:
            rs = next((x for x in r.resource_spans if x.resource == resource), None)
            if rs is None:
                rs = r.resource_spans.add(resource=resource)
                rs.scope_spans.add(scope=scope)
            rs.scope_spans[0].spans.append(span)
        out.append(r)
    return out
