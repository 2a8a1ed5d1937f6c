"""Where and how OTLP export sends: endpoint, protocol, headers, timeout, compression.

Given values win; otherwise the OpenTelemetry exporter environment variables
(OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / _PROTOCOL / _HEADERS / _TIMEOUT / _COMPRESSION / _CERTIFICATE /
_CLIENT_KEY / _CLIENT_CERTIFICATE / _INSECURE), then the defaults.

TLS: an https:// endpoint is verified against the system's CAs or the CA bundle given (`certificate`); a client
certificate and key make it mutual TLS. For gRPC, https:// is TLS and http:// plain; a bare host:port is plain
(as dnpc2otel always did, and Jaeger's default) unless a CA bundle or client certificate is given or
OTEL_EXPORTER_OTLP_INSECURE=false says otherwise (the specification's default, secure, would break every
local Jaeger).
The config remembers where its endpoint came from (`origin`), so that export can say where it sends and why,
and fail at once when nobody chose the endpoint and nothing listens there (`require_listener`).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass, field

from ..errors import UserError

DEFAULT_OTLP_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_OTLP_GRPC_ENDPOINT = "127.0.0.1:4317"
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_ORIGIN = "default"
# below the 4 MiB gRPC default of Jaeger and the Collector, with room for the request envelope
DEFAULT_MAX_REQUEST_BYTES = 3 * 1024 * 1024 + 512 * 1024


class ExportError(UserError):
    """The receiver refused or stayed unreachable; the DuckDB output is unaffected."""


@dataclass
class OtlpConfig:
    endpoint: str
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str | None = None  # None or "gzip"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    retry_for_s: float = 60.0  # give up after retrying this long in all for one request
    origin: str = "given"  # where the endpoint came from: the option that gave it, a variable's name, "default"
    certificate: str | None = None  # CA bundle (PEM) that verifies the receiver
    client_key: str | None = None  # mutual TLS: the client's private key (PEM) ...
    client_certificate: str | None = None  # ... and certificate (PEM)
    insecure: bool | None = None  # gRPC without a scheme: plain text (None: unless TLS files are given)
    deadline_s: float | None = None  # give up after this long in all (None: no overall limit)

    @property
    def grpc_secure(self) -> bool:
        if self.endpoint.startswith("https://"):
            return True
        if self.endpoint.startswith(("http://", "grpc://")):
            return False
        if self.insecure is not None:
            return not self.insecure
        return bool(self.certificate or self.client_certificate)

    @property
    def is_default(self) -> bool:
        return self.origin == DEFAULT_ORIGIN

    @property
    def why(self) -> str:
        if self.is_default:
            return ("the default endpoint: none of --otlp-endpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set")
        return f"endpoint from {self.origin}"

    def describe(self) -> str:
        """'http://127.0.0.1:4318/v1/traces (http/protobuf, endpoint from --otlp-endpoint)'."""
        return f"{self.endpoint} ({self.protocol}, {self.why})"

    @classmethod
    def from_env(
        cls,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: dict[str, str] | None = None,
        given_as: str = "given",
        **kw,
    ) -> OtlpConfig:
        """`given_as` names where a given endpoint came from, for messages (the CLI: '--otlp-endpoint')."""
        env = os.environ
        origin = given_as
        protocol = (
            protocol
            or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol == "http":
            protocol = "http/protobuf"
        if protocol not in PROTOCOLS:
            raise UserError(f"OTLP protocol {protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}")
        if endpoint is None:
            signal = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if signal:
                endpoint, origin = signal, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"  # used as is (no /v1/traces added)
            elif base:
                endpoint = base.rstrip("/") + "/v1/traces" if protocol == "http/protobuf" else base
                origin = "OTEL_EXPORTER_OTLP_ENDPOINT"
        elif protocol == "http/protobuf":
            endpoint = _http_url(endpoint)
        if endpoint is None:
            origin = DEFAULT_ORIGIN
            endpoint = (
                DEFAULT_OTLP_HTTP_ENDPOINT + "/v1/traces" if protocol == "http/protobuf" else DEFAULT_OTLP_GRPC_ENDPOINT
            )
        hdrs = _parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        hdrs.update(_parse_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")))
        hdrs.update(headers or {})
        timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
        if timeout and "timeout_s" not in kw:
            kw["timeout_s"] = float(timeout) / 1000.0  # the variables are in milliseconds
        comp = env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION")
        if comp and "compression" not in kw:
            kw["compression"] = None if comp == "none" else comp
        for name in ("certificate", "client_key", "client_certificate"):
            var = name.upper()
            value = kw.get(name) or env.get(f"OTEL_EXPORTER_OTLP_TRACES_{var}") or env.get(f"OTEL_EXPORTER_OTLP_{var}")
            kw[name] = value or None
        insecure = env.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
        if insecure and kw.get("insecure") is None:
            kw["insecure"] = insecure.strip().lower() == "true"
        _check_tls_files(kw)
        return cls(endpoint=endpoint, protocol=protocol, headers=hdrs, origin=origin, **kw)


def _check_tls_files(kw: dict) -> None:
    """Say now, in one line, when a TLS file is missing or half of a client key pair is."""
    for name, what in (("certificate", "CA certificate"), ("client_key", "client key"),
                       ("client_certificate", "client certificate")):
        path = kw.get(name)
        if path and not os.path.isfile(path):
            raise UserError(f"{what} {path} (--otlp-{name.replace('_', '-')} or OTEL_EXPORTER_OTLP_{name.upper()}): "
                            "no such file")
    if bool(kw.get("client_key")) != bool(kw.get("client_certificate")):
        raise UserError("mutual TLS needs both a client certificate and its key "
                        "(--otlp-client-certificate and --otlp-client-key, or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE "
                        "and OTEL_EXPORTER_OTLP_CLIENT_KEY)")


def require_listener(cfg: OtlpConfig, timeout_s: float = 3.0) -> None:
    """Raise ExportError at once when nothing accepts connections at the endpoint.

    For the default endpoint only: nobody asked for it, so retrying it for a minute helps nobody. A
    configured endpoint is retried (a receiver being restarted comes back)."""
    host, port = endpoint_address(cfg)
    try:
        socket.create_connection((host, port), timeout=min(timeout_s, cfg.timeout_s)).close()
    except OSError as e:
        raise ExportError(
            f"nothing listens at {cfg.endpoint} ({e.strerror or e}); it is {cfg.why}; "
            "start a receiver (docker compose up -d, or bash scripts/jaeger.sh run) or give --otlp-endpoint"
        ) from None


def endpoint_address(cfg: OtlpConfig) -> tuple[str, int]:
    """(host, port) an endpoint connects to: a URL's, or gRPC's 'host:port'."""
    target = cfg.endpoint if "://" in cfg.endpoint else "grpc://" + cfg.endpoint
    parsed = urllib.parse.urlparse(target)
    default_port = {"https": 443, "http": 80}.get(parsed.scheme, 4317)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def _http_url(endpoint: str) -> str:
    """A base URL ('http://host:4318') gets the traces path; a full URL is kept."""
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parsed = urllib.parse.urlparse(endpoint)
    if parsed.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _parse_headers(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return out
