"""OTLP over TLS with headers (issue 15, Security): HTTPS and gRPC-TLS receivers on loopback, with a CA, server
and client certificates made here (the `cryptography` package), mutual TLS required."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from conftest import CORPUS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from otlp_receiver import HttpReceiver, Received
from test_otlp import assert_intact

from dnpc2otel import replay
from dnpc2otel.errors import UserError
from dnpc2otel.export.otlp import ExportError, OtlpConfig, export


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, key, cert) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca, server, client (signed by ca) and other-ca: NAME.pem / NAME.key."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _write(d / "ca", ca_key, _cert("test CA", ca_key, "test CA", ca_key, ca=True))
    _write(d / "other-ca", other_key, _cert("other CA", other_key, "other CA", other_key, ca=True))
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(d / name, key, _cert(name, key, "test CA", ca_key, ca=False, server=server))
    return d


def server_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    return ctx


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tls") / "htex.duckdb"
    replay(CORPUS / "htex-2026" / "runinfo", out)
    return out


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "dnpc2otel.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_https_with_mutual_tls_and_headers_from_the_environment(pki, db):
    with HttpReceiver(tls=server_context(pki)) as rx:
        proc = cli("export", str(db), env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret,x-tenant=hpc",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem"),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki / "client.key"),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki / "client.pem")})
    assert proc.returncode == 0, proc.stderr
    assert rx.endpoint.startswith("https://") and rx.received.requests
    assert all(h.get("authorization") == "Bearer s3cret" and h.get("x-tenant") == "hpc" for h in rx.headers)
    assert_intact(db, rx.received)
    assert "s3cret" not in proc.stdout + proc.stderr  # headers (secrets) are never printed


def test_https_traces_variables_and_flags(pki, db, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki / "other-ca.pem"))  # the _TRACES_ one wins
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", str(pki / "ca.pem"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", str(pki / "client.key"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", str(pki / "client.pem"))
    with HttpReceiver(tls=server_context(pki)) as rx:
        export(db, OtlpConfig.from_env(rx.endpoint, "http/protobuf"))
        assert_intact(db, rx.received)
    with HttpReceiver(tls=server_context(pki)) as rx:
        proc = cli("export", str(db), "--otlp-endpoint", rx.endpoint, "--otlp-certificate", str(pki / "ca.pem"),
                   "--otlp-client-key", str(pki / "client.key"),
                   "--otlp-client-certificate", str(pki / "client.pem"), "--otlp-header", "x-team=a")
        assert proc.returncode == 0, proc.stderr
        assert all(h.get("x-team") == "a" for h in rx.headers)
        assert_intact(db, rx.received)


def test_wrong_ca_is_one_clear_line_at_once(pki, db):
    with HttpReceiver(tls=server_context(pki)) as rx:
        proc = cli("export", str(db), "--otlp-endpoint", rx.endpoint, "--otlp-certificate", str(pki / "other-ca.pem"),
                   "--otlp-client-key", str(pki / "client.key"), "--otlp-client-certificate", str(pki / "client.pem"),
                   "--otlp-retry-seconds", "60")
    line = one_error_line(proc)
    assert "certificate verify failed" in line and "--otlp-certificate" in line
    assert "retried" not in line and not rx.received.requests


def test_missing_client_certificate_is_a_clear_error(pki, db):
    with HttpReceiver(tls=server_context(pki)) as rx:
        cfg = OtlpConfig.from_env(rx.endpoint, "http/protobuf", certificate=str(pki / "ca.pem"), retry_for_s=3)
        with pytest.raises(ExportError) as e:
            export(db, cfg)
    assert "certificate" in str(e.value) and "resume with:" in str(e.value)
    assert not rx.received.requests


def test_missing_tls_files_are_said_before_sending(pki, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        OtlpConfig.from_env("https://127.0.0.1:1", certificate=str(tmp_path / "none.pem"))
    with pytest.raises(UserError, match="both a client certificate and its key"):
        OtlpConfig.from_env("https://127.0.0.1:1", client_certificate=str(pki / "client.pem"))


def grpc_tls_receiver(pki: Path):
    received: list = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the generated API
            received.append((request, dict(context.invocation_metadata())))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    creds = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
                                        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    return server, port, received


def test_grpc_with_mutual_tls_and_headers(pki, db):
    server, port, received = grpc_tls_receiver(pki)
    server.start()
    try:
        cfg = OtlpConfig.from_env(f"127.0.0.1:{port}", "grpc", {"authorization": "Bearer g"},
                                  certificate=str(pki / "ca.pem"), client_key=str(pki / "client.key"),
                                  client_certificate=str(pki / "client.pem"))
        assert cfg.grpc_secure  # a bare host:port with TLS files is TLS
        result = export(db, cfg)
        assert result.spans and all(md.get("authorization") == "Bearer g" for _, md in received)
        assert_intact(db, Received(requests=[r for r, _ in received]))
        with pytest.raises(ExportError) as e:  # a CA that did not sign the server's certificate
            export(db, OtlpConfig.from_env(f"https://127.0.0.1:{port}", "grpc", certificate=str(pki / "other-ca.pem"),
                                           client_key=str(pki / "client.key"),
                                           client_certificate=str(pki / "client.pem"), retry_for_s=3))
        assert "TLS" in str(e.value) or "retried" in str(e.value)
    finally:
        server.stop(0)


def test_grpc_insecure_variable(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "false")
    assert OtlpConfig.from_env("127.0.0.1:4317", "grpc").grpc_secure
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    assert not OtlpConfig.from_env("127.0.0.1:4317", "grpc").grpc_secure
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_INSECURE")
    assert not OtlpConfig.from_env("127.0.0.1:4317", "grpc").grpc_secure  # as before: local Jaeger is plain
    assert OtlpConfig.from_env("https://collector:4317", "grpc").grpc_secure


def test_real_jaeger_with_mutual_tls(pki, db, tmp_path):
    """Jaeger's OTLP receivers with TLS and client certificates required (scripts/jaeger-tls-config.yaml):
    both transports deliver every span; without a client certificate, one clear error."""
    from jaeger_fixture import REPO_ROOT, own_jaeger
    from test_jaeger_export import assert_trace_in_jaeger, trace_ids

    server = own_jaeger(REPO_ROOT / "scripts" / "jaeger-tls-config.yaml", tmp_path, {
        "JAEGER_OTLP_TLS_CERT": str(pki / "server.pem"), "JAEGER_OTLP_TLS_KEY": str(pki / "server.key"),
        "JAEGER_OTLP_TLS_CLIENT_CA": str(pki / "ca.pem")})
    server.start()
    try:
        files = {"certificate": str(pki / "ca.pem"), "client_key": str(pki / "client.key"),
                 "client_certificate": str(pki / "client.pem")}
        http = f"https://127.0.0.1:{server.otlp_http_port}"
        assert export(db, OtlpConfig.from_env(http, "http/protobuf", **files)).spans
        for tid in trace_ids(db):
            assert_trace_in_jaeger(server, db, tid)
        grpc_result = export(db, OtlpConfig.from_env(f"https://127.0.0.1:{server.otlp_grpc_port}", "grpc", **files))
        assert grpc_result.spans and grpc_result.retries == 0
        proc = cli("export", str(db), "--otlp-endpoint", http, "--otlp-certificate", files["certificate"])
        line = one_error_line(proc)
        assert "TLS with OTLP receiver" in line and "client certificate" in line
    finally:
        server.stop()
