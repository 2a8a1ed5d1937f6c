"""Pytest plugin: a real Jaeger v2 (in-memory storage) for integration tests.

Register it in ``tests/conftest.py``::

    pytest_plugins = ["jaeger_fixture"]

and use the session-scoped ``jaeger`` fixture, which returns a :class:`JaegerServer`.

How the Jaeger binary is found, in order:

1. ``$DNPC2OTEL_JAEGER_BIN`` if set (path to a ``jaeger`` v2 binary);
2. ``scripts/jaeger.sh path`` (cached build; first build from source via the Go module
   proxy takes several minutes);
3. if Go is unavailable but ``docker`` works: the ``jaegertracing/jaeger`` image (host
   networking, so the loopback-only config still applies);
4. otherwise the tests are skipped -- unless ``$CI`` is set, in which case they fail.

Every listener binds 127.0.0.1 on a free port chosen here, so several sessions can run
concurrently. Only the standard library (plus pytest) is used. The query port also serves the
real web UI: ``$DNPC2OTEL_JAEGER_UI`` if set, else the build bundled in ``third_party/jaeger-ui``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
JAEGER_SH = REPO_ROOT / "scripts" / "jaeger.sh"
JAEGER_CONFIG = REPO_ROOT / "scripts" / "jaeger-config.yaml"
DOCKER_IMAGE = "jaegertracing/jaeger"
# The real web UI, built (third_party/jaeger-ui/README.md); $DNPC2OTEL_JAEGER_UI names another build.
BUNDLED_UI = REPO_ROOT / "third_party" / "jaeger-ui"

# scripts/jaeger.sh exits with this code when it cannot build (no Go toolchain).
_RC_NO_GO = 3
_BUILD_TIMEOUT_S = 45 * 60
_START_TIMEOUT_S = 60.0

# Variables read by scripts/jaeger-config.yaml (forwarded into the docker container).
_CONFIG_ENV_VARS = (
    "JAEGER_OTLP_GRPC_PORT",
    "JAEGER_OTLP_HTTP_PORT",
    "JAEGER_QUERY_HTTP_PORT",
    "JAEGER_QUERY_GRPC_PORT",
    "JAEGER_HEALTH_PORT",
    "JAEGER_OTLP_GRPC_MAX_RECV_MIB",
    "JAEGER_OTLP_HTTP_MAX_BODY",
    "JAEGER_MAX_TRACES",
    "JAEGER_LOG_LEVEL",
    "JAEGER_UI_ASSETS",
)

# Log files of Jaeger instances started in this session (tails printed on failure).
_LOG_FILES: list[Path] = []


class JaegerError(RuntimeError):
    """Jaeger could not be started, or the query API returned an unexpected answer."""


class TraceNotFound(LookupError):
    """The query API answered 404 for a trace id."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def normalize_trace_id(trace_id: str | int | bytes) -> str:
    """32 lowercase hex chars, from an int, raw bytes, hex (any case) or base64 string."""
    return _normalize_id(trace_id, 16)


def normalize_span_id(span_id: str | int | bytes) -> str:
    """16 lowercase hex chars, from an int, raw bytes, hex (any case) or base64 string."""
    return _normalize_id(span_id, 8)


def _normalize_id(value: str | int | bytes | None, nbytes: int) -> str:
    if value is None or value == "" or value == b"":
        return ""
    if isinstance(value, int):
        return f"{value:0{2 * nbytes}x}"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).rjust(nbytes, b"\0").hex()
    s = value.strip()
    if s.startswith(("0x", "0X")):
        s = s[2:]
    hexdigits = set("0123456789abcdefABCDEF")
    if len(s) <= 2 * nbytes and s and all(c in hexdigits for c in s):
        # Hex. (A base64-encoded id is 24/12 chars and, when padded, contains '='; a
        # 16-byte id in base64 without padding is 22 chars and could collide with a short
        # hex string only if it consists of hex digits exclusively -- Jaeger pads, so the
        # ambiguity does not arise in practice.)
        return s.lower().rjust(2 * nbytes, "0")
    raw = base64.b64decode(s + "=" * (-len(s) % 4))
    if len(raw) != nbytes:
        raise ValueError(f"cannot decode id {value!r} (expected {nbytes} bytes)")
    return raw.hex()


def otlp_any_value(v: dict[str, Any] | None) -> Any:
    """Convert an OTLP-JSON AnyValue (``{"stringValue": "x"}`` ...) to a Python value."""
    if not v:
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])  # int64 is a JSON string in OTLP-JSON
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    if "arrayValue" in v:
        return [otlp_any_value(x) for x in (v["arrayValue"].get("values") or [])]
    if "kvlistValue" in v:
        return otlp_attributes(v["kvlistValue"].get("values"))
    return None


def otlp_attributes(kvs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: otlp_any_value(kv.get("value")) for kv in (kvs or [])}


def _status_code(status: dict[str, Any] | None) -> str:
    """Normalise OTLP status code (int or enum name) to 'UNSET' / 'OK' / 'ERROR'."""
    code = (status or {}).get("code", 0)
    names = {0: "UNSET", 1: "OK", 2: "ERROR"}
    if isinstance(code, int):
        return names.get(code, str(code))
    code = str(code).upper()
    return code[len("STATUS_CODE_") :] if code.startswith("STATUS_CODE_") else code


def flatten_otlp_json(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten an OTLP-JSON ``{"resourceSpans": [...]}`` document into plain span dicts."""
    out: list[dict[str, Any]] = []
    for rs in doc.get("resourceSpans") or []:
        resource_attrs = otlp_attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or []:
            scope = ss.get("scope") or {}
            for sp in ss.get("spans") or []:
                out.append(
                    {
                        "trace_id": normalize_trace_id(sp.get("traceId", "")),
                        "span_id": normalize_span_id(sp.get("spanId", "")),
                        "parent_span_id": normalize_span_id(sp.get("parentSpanId", "")),
                        "name": sp.get("name", ""),
                        "kind": sp.get("kind"),
                        "service_name": resource_attrs.get("service.name"),
                        "resource": resource_attrs,
                        "scope_name": scope.get("name", ""),
                        "start_ns": int(sp.get("startTimeUnixNano", 0)),
                        "end_ns": int(sp.get("endTimeUnixNano", 0)),
                        "attributes": otlp_attributes(sp.get("attributes")),
                        "events": [
                            {
                                "name": ev.get("name", ""),
                                "time_ns": int(ev.get("timeUnixNano", 0)),
                                "attributes": otlp_attributes(ev.get("attributes")),
                            }
                            for ev in sp.get("events") or []
                        ],
                        "links": [
                            {
                                "trace_id": normalize_trace_id(ln.get("traceId", "")),
                                "span_id": normalize_span_id(ln.get("spanId", "")),
                                "attributes": otlp_attributes(ln.get("attributes")),
                            }
                            for ln in sp.get("links") or []
                        ],
                        "status_code": _status_code(sp.get("status")),
                        "status_message": (sp.get("status") or {}).get("message", ""),
                    }
                )
    out.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    return out


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (sockets held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def jaeger_ui_assets() -> Path | None:
    """The built Jaeger UI the fixture serves: $DNPC2OTEL_JAEGER_UI, else the bundled one; None if absent."""
    override = os.environ.get("DNPC2OTEL_JAEGER_UI")
    path = Path(override).resolve() if override else BUNDLED_UI
    return path if (path / "index.html").is_file() else None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path | None, lines: int = 60) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------------------
# the server object
# --------------------------------------------------------------------------------------


@dataclass
class JaegerServer:
    """A Jaeger v2 process (or docker container) listening on 127.0.0.1."""

    argv: list[str]
    log_path: Path
    otlp_grpc_port: int
    otlp_http_port: int
    query_http_port: int
    query_grpc_port: int
    health_port: int
    docker_container: str | None = None
    # Extra config variables (e.g. {"JAEGER_OTLP_GRPC_MAX_RECV_MIB": "1"}); applied on the
    # next start(). The fixture is session-scoped: restore them (and restart) when done.
    extra_env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _log_fh: Any = field(default=None, repr=False)

    # ---- addresses -------------------------------------------------------------------

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.otlp_grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def otlp_http_traces_url(self) -> str:
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_http_port}"

    @property
    def query_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.query_grpc_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/status"

    def env(self) -> dict[str, str]:
        """Environment variables consumed by scripts/jaeger-config.yaml."""
        return {
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http_port),
            "JAEGER_QUERY_HTTP_PORT": str(self.query_http_port),
            "JAEGER_QUERY_GRPC_PORT": str(self.query_grpc_port),
            "JAEGER_HEALTH_PORT": str(self.health_port),
            # empty: the binary's own UI (a placeholder page in a source build) rather than a missing folder
            "JAEGER_UI_ASSETS": str(jaeger_ui_assets() or ""),
            **self.extra_env,
        }

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start Jaeger (on the same ports as before) and wait until it is ready."""
        if self.running:
            return
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(f"\n===== starting {' '.join(self.argv)} =====\n".encode())
        env = {**os.environ, **self.env()}
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
            start_new_session=True,  # own process group => killpg() on stop
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not polled yet"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                rc = None if self._proc is None else self._proc.returncode
                raise JaegerError(
                    f"jaeger exited during startup (rc={rc}); log {self.log_path}:\n" + _tail(self.log_path)
                )
            try:
                health = self._request(self.health_url, timeout=1.0)
                services = self._request(f"{self.query_url}/api/services", timeout=1.0)
                if (
                    health[0] == 200
                    and services[0] == 200
                    and _port_open(self.otlp_grpc_port)
                    and _port_open(self.otlp_http_port)
                ):
                    return
                last = f"health={health[0]} services={services[0]}"
            except OSError as exc:  # connection refused etc.
                last = repr(exc)
            time.sleep(0.1)
        raise JaegerError(
            f"jaeger not ready after {timeout:.0f}s ({last}); log {self.log_path}:\n" + _tail(self.log_path)
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Jaeger (SIGTERM to the process group, SIGKILL after `timeout`)."""
        proc, self._proc = self._proc, None
        if self.docker_container:
            subprocess.run(
                ["docker", "rm", "-f", self.docker_container],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    # ---- HTTP ------------------------------------------------------------------------

    @staticmethod
    def _request(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        # No proxies: everything is loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """GET `path` on the query API; returns (status, parsed JSON or None)."""
        status, body = self._request(f"{self.query_url}{path}", timeout=timeout)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode(errors="replace")

    # ---- query API -------------------------------------------------------------------

    def trace_v3(self, trace_id_hex: str | int) -> dict[str, Any]:
        """GET /api/v3/traces/{id}: the parsed JSON, ``{"result": {"resourceSpans": ...}}``.

        Raises TraceNotFound for unknown ids.
        """
        tid = normalize_trace_id(trace_id_hex)
        status, doc = self.get_json(f"/api/v3/traces/{tid}")
        if status == 404:
            raise TraceNotFound(tid)
        if status != 200 or not isinstance(doc, dict):
            raise JaegerError(f"GET /api/v3/traces/{tid} -> {status}: {doc!r}")
        return doc

    def spans_v3(self, trace_id: str | int) -> list[dict[str, Any]]:
        """Spans of a trace via the v3 API, flattened; ids normalised to lowercase hex.

        Each span: trace_id, span_id, parent_span_id ("" for roots), name, kind,
        service_name, resource, scope_name, start_ns, end_ns, attributes (dict),
        events [{name, time_ns, attributes}], links [{trace_id, span_id, attributes}],
        status_code ("UNSET"/"OK"/"ERROR"), status_message. Sorted by start time.
        """
        doc = self.trace_v3(trace_id)
        return flatten_otlp_json(doc.get("result", doc))

    def trace_legacy(self, trace_id_hex: str | int) -> dict[str, Any]:
        """GET /api/traces/{id}: the v1 (UI) JSON trace object.

        Returns ``data[0]`` i.e. ``{"traceID", "spans": [...], "processes": {...}}``;
        spans carry ``references`` with refType CHILD_OF / FOLLOWS_FROM, ``tags``,
        ``logs``, ``startTime``/``duration`` in microseconds. Raises TraceNotFound.
        """
        tid = normalize_trace_id(trace_id_hex)
        status, doc = self.get_json(f"/api/traces/{tid}")
        if status == 404:
            raise TraceNotFound(tid)
        if status != 200 or not isinstance(doc, dict) or not doc.get("data"):
            raise JaegerError(f"GET /api/traces/{tid} -> {status}: {doc!r}")
        return doc["data"][0]

    def wait_for_spans(self, trace_id: str | int, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll the v3 API until the trace has at least `count` spans; return them."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while True:
            try:
                spans = self.spans_v3(trace_id)
            except TraceNotFound:
                spans = []
            if len(spans) >= count:
                return spans
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"trace {normalize_trace_id(trace_id)}: {len(spans)} spans after "
                    f"{timeout}s, wanted {count}"
                )
            time.sleep(0.1)

    def services(self) -> list[str]:
        """Service names known to Jaeger (GET /api/services), sorted."""
        status, doc = self.get_json("/api/services")
        if status != 200 or not isinstance(doc, dict):
            raise JaegerError(f"GET /api/services -> {status}: {doc!r}")
        return sorted(doc.get("data") or [])


# --------------------------------------------------------------------------------------
# locating Jaeger
# --------------------------------------------------------------------------------------


def _jaeger_version() -> str:
    out = subprocess.run(
        ["bash", str(JAEGER_SH), "version"], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0].lstrip("v")


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _locate_jaeger() -> tuple[str, list[str]] | tuple[None, str]:
    """('binary', [path]) / ('docker', [image]) / (None, reason)."""
    override = os.environ.get("DNPC2OTEL_JAEGER_BIN")
    if override:
        if os.access(override, os.X_OK):
            return "binary", [override]
        return None, f"DNPC2OTEL_JAEGER_BIN={override!r} is not an executable"
    reason = ""
    try:
        res = subprocess.run(
            ["bash", str(JAEGER_SH), "path"],
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
        path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.returncode == 0 and path and os.access(path, os.X_OK):
            return "binary", [path]
        reason = f"scripts/jaeger.sh path failed (rc={res.returncode}): {res.stderr[-2000:]}"
        if res.returncode != _RC_NO_GO:
            # Go is there but the build failed: a real error, do not hide it behind docker.
            return None, reason
    except subprocess.TimeoutExpired:
        return None, f"scripts/jaeger.sh path timed out after {_BUILD_TIMEOUT_S}s"
    if _docker_works():
        image = f"{DOCKER_IMAGE}:{_jaeger_version()}"
        # Pull up front so the (slow) download does not eat into the start-up timeout.
        pull = subprocess.run(["docker", "pull", image], capture_output=True, text=True, check=False)
        if pull.returncode != 0:
            return None, f"docker pull {image} failed: {pull.stderr[-1000:]}"
        return "docker", [image]
    return None, f"no Go toolchain and no working docker to run Jaeger ({reason.strip()})"


def _make_server(kind: str, what: list[str], log_path: Path) -> JaegerServer:
    ports = _free_ports(5)
    container = None
    if kind == "binary":
        argv = [what[0], "--config", str(JAEGER_CONFIG)]
    else:
        container = f"dnpc2otel-jaeger-{uuid.uuid4().hex[:10]}"
        argv = ["docker", "run", "--rm", "--name", container, "--network", "host"]
        for name in _CONFIG_ENV_VARS:
            argv += ["-e", name]  # value (if set) taken from the environment of `docker run`
        ui = jaeger_ui_assets()
        if ui is not None:  # mounted at the same path, so JAEGER_UI_ASSETS holds inside the container too
            argv += ["-v", f"{ui}:{ui}:ro"]
        argv += [
            "-v",
            f"{JAEGER_CONFIG}:/etc/dnpc2otel/jaeger-config.yaml:ro",
            what[0],
            "--config",
            "/etc/dnpc2otel/jaeger-config.yaml",
        ]
    return JaegerServer(
        argv=argv,
        log_path=log_path,
        otlp_grpc_port=ports[0],
        otlp_http_port=ports[1],
        query_http_port=ports[2],
        query_grpc_port=ports[3],
        health_port=ports[4],
        docker_container=container,
    )


def _skip_or_fail(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Jaeger unavailable (CI is set, so failing rather than skipping): {msg}")
    pytest.skip(f"Jaeger unavailable: {msg}")


# --------------------------------------------------------------------------------------
# fixture + hooks
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory):
    """A running Jaeger v2 (in-memory) on free loopback ports, shared by the session."""
    kind, what = _locate_jaeger()
    if kind is None:
        _skip_or_fail(str(what))
    log_path = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    _LOG_FILES.append(log_path)
    server = None
    error = None
    for _attempt in range(3):  # retry with new ports if one got taken in the meantime
        server = _make_server(kind, what, log_path)
        try:
            server.start()
            error = None
            break
        except JaegerError as exc:
            error = exc
    if error is not None:
        if kind == "docker" or os.environ.get("CI"):
            pytest.fail(str(error))
        raise error
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """On a failing run, show the tail of each Jaeger log used in this session."""
    if exitstatus == 0:
        return
    for path in _LOG_FILES:
        if path.exists():
            terminalreporter.write_sep("-", f"jaeger log tail ({path})")
            terminalreporter.write_line(_tail(path, 40))


# --------------------------------------------------------------------------------------
# a Jaeger of its own, with another config (persistent Badger storage, TLS)
# --------------------------------------------------------------------------------------

JAEGER_BADGER_CONFIG = REPO_ROOT / "scripts" / "jaeger-badger-config.yaml"


def own_jaeger(config: Path, workdir: Path, extra_env: dict[str, str] | None = None) -> JaegerServer:
    """A Jaeger (binary only, not started) with `config`, its log in `workdir`; for tests that stop, restart or
    reconfigure it, so that the session's `jaeger` stays as it is. Skips when there is no binary."""
    kind, what = _locate_jaeger()
    if kind != "binary":
        _skip_or_fail(str(what) if kind is None else "a Jaeger of its own needs the binary, not docker")
    log_path = workdir / "jaeger.log"
    _LOG_FILES.append(log_path)
    server = _make_server(kind, what, log_path)
    server.argv = [what[0], "--config", str(config)]
    server.extra_env = dict(extra_env or {})
    return server


def badger_jaeger(workdir: Path) -> JaegerServer:
    """A Jaeger with persistent Badger storage in workdir/badger: a restart (same ports) loses no span."""
    return own_jaeger(JAEGER_BADGER_CONFIG, workdir, {"JAEGER_BADGER_DIR": str(workdir / "badger")})
