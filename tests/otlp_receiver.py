"""Minimal OTLP trace receivers for the tests: they decode every request's protobuf and keep the spans."""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class Received:
    requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    refused: int = 0

    def spans(self) -> list[dict]:
        out = []
        for req in self.requests:
            for rs in req.resource_spans:
                service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append({"service": service, "span": s})
        return out


class HttpReceiver:
    """POST /v1/traces. `max_bytes` answers 413 above it; `fail_first` answers 503 that many times; `answers`:
    the first requests get these (status, Retry-After or None) instead; `delay_first` requests are stored but
    answered after `delay_s` (a slow receiver: the client may have given up). `headers` keeps each request's."""

    def __init__(self, max_bytes: int | None = None, fail_first: int = 0,
                 answers: list[tuple[int, str | None]] | None = None, delay_first: int = 0, delay_s: float = 0.0,
                 tls=None):
        self.received = Received()
        self.max_bytes = max_bytes
        self.fail_first = fail_first
        self.answers = list(answers or [])
        self.delay_first = delay_first
        self.delay_s = delay_s
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})  # case-insensitive
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else None
                    delay = receiver.delay_first > 0
                    receiver.delay_first -= delay
                if answer is not None:
                    receiver.received.refused += 1
                    self.send_response(answer[0])
                    if answer[1] is not None:
                        self.send_header("Retry-After", answer[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    receiver.received.refused += 1
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                if receiver.max_bytes is not None and len(body) > receiver.max_bytes:
                    receiver.received.refused += 1
                    self.send_response(413)
                    self.end_headers()
                    return
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.received.requests.append(req)
                receiver.received.sizes.append(len(body))
                if delay:
                    time.sleep(receiver.delay_s)
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:  # an ssl.SSLContext (server side)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.endpoint = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver:
    """OTLP gRPC TraceService with a chosen receive limit (gRPC's default: 4 MiB)."""

    def __init__(self, max_receive_bytes: int = 4 * 1024 * 1024):
        self.received = Received()
        received = self.received

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the generated API
                received.requests.append(request)
                received.sizes.append(request.ByteSize())
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            options=[("grpc.max_receive_message_length", max_receive_bytes)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{port}"

    def __enter__(self) -> GrpcReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(0)
