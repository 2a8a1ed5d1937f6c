"""Sending one encoded ExportTraceServiceRequest over OTLP/HTTP or OTLP/gRPC, plain or TLS, and saying how it went.

Every failure is one of three kinds, so that the exporter knows what to do with it:
`Retryable` (the receiver is unreachable, restarting, slow or busy: 408, 429, 5xx but 501, gRPC UNAVAILABLE
…; it may name a Retry-After), `TooLarge` (413, the Collector's 400 "request body too large", gRPC
RESOURCE_EXHAUSTED "larger than max": the request is split) and `ExportError` (will not heal by waiting: other
4xx such as 400, 401, 403, 404, a TLS certificate that does not verify, a refused client certificate).
"""

from __future__ import annotations

import email.utils
import gzip
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .. import __version__
from ..errors import UserError
from .otlp_config import ExportError, OtlpConfig

RETRY_HTTP = (408, 429, 500, 502, 503, 504)
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Retryable(Exception):
    def __init__(self, msg: str, after: float | None = None):
        super().__init__(msg)
        self.after = after


class TooLarge(Exception):
    pass


def retry_after(value: str | None) -> float | None:
    """Seconds of a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{what} {path}: cannot read ({e.strerror or e})") from None


def ssl_context(cfg: OtlpConfig) -> ssl.SSLContext:
    """TLS context: the system's CAs or the configured bundle; a client certificate for mutual TLS."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.certificate) if cfg.certificate else ssl.create_default_context()
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"CA certificate {cfg.certificate}: cannot load ({_ssl_reason(e)})") from None
    if cfg.client_certificate:
        try:
            ctx.load_cert_chain(cfg.client_certificate, cfg.client_key)
        except (OSError, ssl.SSLError) as e:
            raise UserError(f"client certificate {cfg.client_certificate} / key {cfg.client_key}: cannot load "
                            f"({_ssl_reason(e)})") from None
    return ctx


def _ssl_reason(e: BaseException) -> str:
    return getattr(e, "verify_message", None) or getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)


def tls_error(cfg: OtlpConfig, e: BaseException) -> ExportError:
    reason = _ssl_reason(e)
    if isinstance(e, ssl.SSLCertVerificationError):
        reason = f"certificate verify failed ({reason})"
    advice = ("give the CA bundle that signed the receiver's certificate (--otlp-certificate, "
              "OTEL_EXPORTER_OTLP_CERTIFICATE)")
    if "CERTIFICATE_REQUIRED" in str(e).upper() or "certificate required" in str(e).lower():
        advice = "the receiver requires a client certificate (--otlp-client-certificate and --otlp-client-key)"
    elif "verify" not in str(reason).lower():
        advice = ("check the receiver's TLS settings and the client certificate" if cfg.client_certificate else
                  "if the receiver requires a client certificate, give --otlp-client-certificate and --otlp-client-key")
    return ExportError(f"TLS with OTLP receiver {cfg.endpoint} failed: {reason}; {advice}")


class HttpSender:
    def __init__(self, cfg: OtlpConfig):
        self.cfg = cfg
        self.context = ssl_context(cfg) if cfg.endpoint.startswith("https://") else None
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"dnpc2otel/{__version__}",
                        **cfg.headers}
        if cfg.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"

    def __call__(self, body: bytes) -> int:
        """Send; return the spans the receiver says it rejected (partial success)."""
        cfg = self.cfg
        if cfg.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
        req = urllib.request.Request(cfg.endpoint, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s, context=self.context) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace").strip()
            # 413 is the standard answer; the Collector's confighttp (Jaeger v2) answers 400 "request body too large"
            if e.code == 413 or (e.code == 400 and "too large" in detail):
                raise TooLarge(f"HTTP {e.code} {detail}".strip()) from None
            if e.code in RETRY_HTTP:
                raise Retryable(f"HTTP {e.code} {detail}".strip(), retry_after(e.headers.get("Retry-After"))) from None
            raise ExportError(f"OTLP receiver {cfg.endpoint} refused the spans: HTTP {e.code} {detail}".strip()
                              + _advice(e.code)) from None
        except ssl.SSLError as e:  # raised bare when the receiver refuses the client after the handshake
            raise tls_error(cfg, e) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                raise tls_error(cfg, e.reason) from None
            raise Retryable(f"{cfg.endpoint} unreachable ({e.reason})") from None
        except (ConnectionError, TimeoutError, OSError) as e:
            raise Retryable(f"{cfg.endpoint}: {e.__class__.__name__} {e}".strip()) from None
        return _rejected(answer)

    def close(self) -> None:
        pass


def _advice(code: int) -> str:
    if code in (401, 403):
        return " (authentication: check --otlp-header / OTEL_EXPORTER_OTLP_HEADERS)"
    if code == 404:
        return " (wrong path? OTLP/HTTP traces go to /v1/traces)"
    return ""


def _rejected(answer: bytes) -> int:
    if not answer:
        return 0
    try:
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(answer)
    except Exception:  # noqa: BLE001 - an answer that is not OTLP protobuf (some proxies): nothing to learn from it
        return 0
    return resp.partial_success.rejected_spans


class GrpcSender:
    def __init__(self, cfg: OtlpConfig):
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's core logs TLS handshakes on stderr otherwise
        import grpc

        self.grpc = grpc
        self.cfg = cfg
        target = cfg.endpoint
        for scheme in ("http://", "https://", "grpc://"):
            if target.startswith(scheme):
                target = target[len(scheme):]
        target = target.rstrip("/")
        # reconnect soon after a receiver comes back: gRPC's own backoff would reach 120 s, past our retries'
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.initial_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", 5000)]
        if cfg.grpc_secure:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(cfg.certificate, "CA certificate") if cfg.certificate else None,
                private_key=_read(cfg.client_key, "client key") if cfg.client_key else None,
                certificate_chain=_read(cfg.client_certificate, "client certificate")
                if cfg.client_certificate else None,
            )
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        # the request is already protobuf bytes: no serializer
        self.call = self.channel.unary_unary(
            EXPORT_METHOD, request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        self.compression = grpc.Compression.Gzip if cfg.compression == "gzip" else None
        self.metadata = [(k.lower(), v) for k, v in cfg.headers.items()] or None  # gRPC wants lowercase keys

    def __call__(self, body: bytes) -> int:
        grpc = self.grpc
        try:
            resp = self.call(body, timeout=self.cfg.timeout_s, metadata=self.metadata, compression=self.compression)
        except grpc.RpcError as e:
            code = e.code()
            detail = e.details() or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail:
                raise TooLarge(detail) from None
            if "CERTIFICATE_VERIFY_FAILED" in detail or "SSL_ERROR" in detail or "handshake" in detail.lower():
                raise ExportError(f"TLS with OTLP receiver {self.cfg.endpoint} failed: {detail.strip()}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED):
                hint = ""
                if self.cfg.grpc_secure and not self.cfg.client_certificate and "Socket closed" in detail:
                    hint = " (a TLS receiver that requires a client certificate closes the connection so)"
                raise Retryable(f"{self.cfg.endpoint}: {code.name} {detail}{hint}".strip()) from None
            raise ExportError(f"OTLP receiver {self.cfg.endpoint} refused the spans: {code.name} {detail}") from None
        return resp.partial_success.rejected_spans

    def close(self) -> None:
        self.channel.close()


def sender(cfg: OtlpConfig) -> HttpSender | GrpcSender:
    return GrpcSender(cfg) if cfg.protocol == "grpc" else HttpSender(cfg)
