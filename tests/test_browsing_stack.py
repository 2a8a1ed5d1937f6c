"""Static checks of the Docker browsing stack (docker-compose.yml + grafana/).

No Docker engine is needed: the compose file, the Jaeger v2 and Tempo
configurations and the Grafana provisioning are parsed and cross-checked, so
that a port, host name, uid or mounted path that drifts out of step in one
file fails here instead of in a user's browser.

Each check is a function returning a list of problems; the tests assert that
the list is empty for the real files, and the ``test_checks_catch_*`` tests
feed deliberately broken copies to the same functions to show they can fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
GRAFANA_DIR = ROOT / "grafana"
LOCAL_TEMPO_CONFIG = ROOT / "scripts" / "tempo-config.yaml"

from dnpc2otel.export.otlp_config import DEFAULT_OTLP_GRPC_ENDPOINT, DEFAULT_OTLP_HTTP_ENDPOINT  # noqa: E402

LOOPBACK_OR_ANY = {"127.0.0.1", "localhost", "0.0.0.0", "::", "::1", ""}


# --------------------------------------------------------------------------
# loading helpers


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_compose() -> dict:
    return load_yaml(COMPOSE_FILE)


_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def expand_defaults(value: str) -> str:
    """Replace ``${env:VAR:-default}`` / ``${VAR:-default}`` by the default."""
    return _ENV_REF.sub(lambda m: m.group(2) or "", str(value))


def host_port(endpoint: str) -> tuple[str, int]:
    """Split 'host:port', 'http://host:port/...' or ':port'."""
    endpoint = expand_defaults(endpoint).strip()
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        assert parts.port is not None, endpoint
        return parts.hostname or "", parts.port
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def duration_seconds(value) -> float:
    """Parse a Go/Prometheus style duration ('87600h', '1h30m', 0)."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        assert m.start() == pos, f"bad duration {value!r}"
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos > 0, f"bad duration {value!r}"
    return total


def published_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host_ip, host_port, container_port) for each TCP port published."""
    out = []
    for entry in service.get("ports", []) or []:
        if isinstance(entry, dict):  # long syntax
            if entry.get("protocol", "tcp") != "tcp" or "published" not in entry:
                continue
            out.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        text = str(entry)
        if "/" in text:
            text, proto = text.split("/", 1)
            if proto != "tcp":
                continue
        parts = text.rsplit(":", 2)
        if len(parts) == 1:  # container port only: random host port
            continue
        if len(parts) == 2:
            ip, hp, cp = "", parts[0], parts[1]
        else:
            ip, hp, cp = parts
        if "-" in hp or "-" in cp:
            raise AssertionError(f"port ranges are not expected here: {entry!r}")
        out.append((ip.strip("[]"), int(hp), int(cp)))
    return out


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, container_target) for bind mounts and named volumes."""
    out = []
    for entry in service.get("volumes", []) or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("source", "")), str(entry["target"])))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            out.append(("", parts[0]))
        else:
            out.append((parts[0], parts[1]))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path_for(compose: dict, service_name: str, container_path: str) -> Path | None:
    """Host file or directory that provides container_path in a service."""
    best = None
    for source, target in volume_mounts(compose["services"][service_name]):
        if not is_bind(source):
            continue
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    if best is None:
        return None
    source, target = best
    rest = container_path[len(target) :].lstrip("/")
    base = (COMPOSE_FILE.parent / source).resolve()
    return base / rest if rest else base


def command_list(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def flag_value(args: list[str], *names: str) -> str | None:
    """Value of '--flag value', '--flag=value' or '-flag=value'."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def image_of(compose: dict, prefix: str) -> str:
    """Name of the (first) service whose image is prefix[:tag]."""
    for name, svc in compose["services"].items():
        image = str(svc.get("image", ""))
        if image.split("@")[0].rsplit(":", 1)[0] == prefix:
            return name
    raise AssertionError(f"no service runs image {prefix}")


def jaeger_service(compose: dict) -> str:
    return image_of(compose, "jaegertracing/jaeger")


def tempo_service(compose: dict) -> str:
    # tempo-init also runs the tempo image, but only the server has -config.file
    for name, svc in compose["services"].items():
        if str(svc.get("image", "")).startswith("grafana/tempo:") and flag_value(
            command_list(svc), "-config.file", "--config.file"
        ):
            return name
    raise AssertionError("no Tempo service started with -config.file")


def grafana_service(compose: dict) -> str:
    return image_of(compose, "grafana/grafana")


def jaeger_config_path(compose: dict) -> Path:
    name = jaeger_service(compose)
    target = flag_value(command_list(compose["services"][name]), "--config")
    assert target, "the Jaeger service must be started with --config <file>"
    target = target.removeprefix("file:")
    path = host_path_for(compose, name, target)
    assert path is not None, f"{target} is not mounted into {name}"
    return path


def tempo_config_path(compose: dict) -> Path:
    name = tempo_service(compose)
    target = flag_value(command_list(compose["services"][name]), "-config.file", "--config.file")
    path = host_path_for(compose, name, target)
    assert path is not None, f"{target} is not mounted into {name}"
    return path


def provisioned_datasources() -> list[dict]:
    out = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml")):
        out.extend(load_yaml(path).get("datasources", []) or [])
    return out


def dashboard_files() -> list[Path]:
    return sorted((GRAFANA_DIR / "dashboards").glob("*.json"))


def cli_defaults() -> tuple[str, str, str]:
    """(http_endpoint, grpc_endpoint, where they came from): the CLI's own defaults."""
    return DEFAULT_OTLP_HTTP_ENDPOINT, DEFAULT_OTLP_GRPC_ENDPOINT, "dnpc2otel.otlp"


# --------------------------------------------------------------------------
# checks (each returns a list of problems)


def check_images(compose: dict) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        image = svc.get("image")
        if not image:
            problems.append(f"{name}: no image (builds are not expected here)")
            continue
        image = str(image)
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            problems.append(f"{name}: image {image} has no tag")
            continue
        tag = last.rsplit(":", 1)[1]
        if tag in ("latest", "main", "master", "edge", "nightly") or not re.match(r"^v?\d+(\.\d+)+", tag):
            problems.append(f"{name}: image {image} is not pinned to a version")
    return problems


def check_jaeger(compose: dict, jcfg: dict, tcfg: dict) -> list[str]:
    problems = []
    jname = jaeger_service(compose)
    published = {hp: (ip, cp) for ip, hp, cp in published_ports(compose["services"][jname])}

    # every component named in the pipelines/extensions is configured
    service = jcfg.get("service", {})
    for ext in service.get("extensions", []):
        if ext not in (jcfg.get("extensions") or {}):
            problems.append(f"jaeger: extension {ext} used but not configured")
    traces = (service.get("pipelines") or {}).get("traces")
    if not traces:
        return problems + ["jaeger: no traces pipeline"]
    for kind in ("receivers", "processors", "exporters"):
        for ref in traces.get(kind, []):
            if ref not in (jcfg.get(kind) or {}):
                problems.append(f"jaeger: {kind[:-1]} {ref} used but not configured")

    # OTLP receivers: host 4317/4318 -> container ports the receivers listen on
    otlp_refs = [r for r in traces.get("receivers", []) if r.split("/")[0] == "otlp"]
    if not otlp_refs:
        problems.append("jaeger: traces pipeline has no otlp receiver")
    else:
        protocols = (jcfg["receivers"][otlp_refs[0]] or {}).get("protocols") or {}
        for proto, host_p in (("grpc", 4317), ("http", 4318)):
            endpoint = (protocols.get(proto) or {}).get("endpoint")
            if endpoint is None:
                problems.append(f"jaeger: otlp {proto} receiver has no explicit endpoint")
                continue
            host, port = host_port(endpoint)
            if host not in ("0.0.0.0", "", "::"):
                problems.append(f"jaeger: otlp {proto} listens on {host}, unreachable from the host")
            if host_p not in published:
                problems.append(f"jaeger: host port {host_p} (OTLP {proto}) is not published")
            elif published[host_p][1] != port:
                problems.append(
                    f"jaeger: host {host_p} maps to container {published[host_p][1]}, "
                    f"but the otlp {proto} receiver listens on {port}"
                )

    # storage wiring
    backends = ((jcfg.get("extensions") or {}).get("jaeger_storage") or {}).get("backends") or {}
    exporters = traces.get("exporters", [])
    if "jaeger_storage_exporter" not in exporters:
        problems.append("jaeger: traces pipeline does not write to jaeger_storage_exporter")
    else:
        store = (jcfg["exporters"]["jaeger_storage_exporter"] or {}).get("trace_storage")
        if store not in backends:
            problems.append(f"jaeger: jaeger_storage_exporter writes to unknown backend {store}")
    query = (jcfg.get("extensions") or {}).get("jaeger_query") or {}
    if ((query.get("storage") or {}).get("traces")) not in backends:
        problems.append("jaeger: jaeger_query reads an unknown trace backend")

    # UI on 16686
    ui = (query.get("http") or {}).get("endpoint")
    if ui is None:
        problems.append("jaeger: jaeger_query.http.endpoint not set")
    else:
        host, port = host_port(ui)
        if host not in ("0.0.0.0", "", "::"):
            problems.append(f"jaeger: UI listens on {host}, unreachable from the host")
        if 16686 not in published:
            problems.append("jaeger: host port 16686 (UI) is not published")
        elif published[16686][1] != port:
            problems.append(f"jaeger: host 16686 maps to {published[16686][1]}, UI listens on {port}")

    # fan-out to Tempo: an otlp (gRPC) exporter aimed at the Tempo service
    tname = tempo_service(compose)
    tempo_grpc = (
        (((tcfg.get("distributor") or {}).get("receivers") or {}).get("otlp") or {}).get("protocols", {}).get("grpc")
    )
    tempo_grpc_port = host_port((tempo_grpc or {}).get("endpoint", "0.0.0.0:4317"))[1]
    to_tempo = [e for e in exporters if e.split("/")[0] in ("otlp", "otlp_grpc")]
    if not to_tempo:
        problems.append("jaeger: no otlp exporter in the traces pipeline (no fan-out to Tempo)")
    for ref in to_tempo:
        endpoint = (jcfg["exporters"].get(ref) or {}).get("endpoint", "")
        host, port = host_port(endpoint)
        if host != tname:
            problems.append(f"jaeger: exporter {ref} sends to host {host!r}, Tempo service is {tname!r}")
        if port != tempo_grpc_port:
            problems.append(
                f"jaeger: exporter {ref} sends to port {port}, Tempo OTLP gRPC listens on {tempo_grpc_port}"
            )
        if not ((jcfg["exporters"].get(ref) or {}).get("tls") or {}).get("insecure"):
            problems.append(f"jaeger: exporter {ref} must use tls.insecure (Tempo has no TLS here)")
    return problems


def check_tempo_old_traces(tcfg: dict, label: str) -> list[str]:
    """Settings that make after-the-fact (old) traces ingestible and searchable."""
    problems = []
    month = 30 * 86400
    trace = (tcfg.get("storage") or {}).get("trace") or {}
    slack = (trace.get("wal") or {}).get("ingestion_time_range_slack")
    if slack is None or duration_seconds(slack) < 365 * 86400:
        problems.append(f"{label}: storage.trace.wal.ingestion_time_range_slack must be >= 1y (got {slack})")
    retention = ((tcfg.get("compactor") or {}).get("compaction") or {}).get("block_retention")
    if retention is None or duration_seconds(retention) < duration_seconds(slack or 0):
        problems.append(
            f"{label}: compactor.compaction.block_retention must be >= the ingestion slack (got {retention})"
        )
    search = (tcfg.get("query_frontend") or {}).get("search") or {}
    until = search.get("query_ingesters_until")
    after = search.get("query_backend_after", "15m")
    if until is None or duration_seconds(until) < 12 * month:
        problems.append(f"{label}: query_frontend.search.query_ingesters_until must be large (got {until})")
    elif duration_seconds(until) < duration_seconds(after):
        problems.append(f"{label}: query_ingesters_until < query_backend_after (Tempo refuses to start)")

    def unlimited_or_large(value) -> bool:
        return value is not None and (duration_seconds(value) == 0 or duration_seconds(value) >= 12 * month)

    max_dur = search.get("max_duration")
    if not unlimited_or_large(max_dur):
        problems.append(f"{label}: query_frontend.search.max_duration must be 0 or large (got {max_dur})")
    metrics_max = ((tcfg.get("query_frontend") or {}).get("metrics") or {}).get("max_duration")
    if not unlimited_or_large(metrics_max):
        problems.append(f"{label}: query_frontend.metrics.max_duration must be 0 or large (got {metrics_max})")

    # TraceQL metrics read the metrics-generator's local-blocks, which have their own windows
    gen = tcfg.get("metrics_generator") or {}
    year = 365 * 86400
    for path, value in (
        ("metrics_generator.metrics_ingestion_time_range_slack", gen.get("metrics_ingestion_time_range_slack")),
        (
            "metrics_generator.traces_storage.ingestion_time_range_slack",
            (gen.get("traces_storage") or {}).get("ingestion_time_range_slack"),
        ),
        (
            "metrics_generator.processor.local_blocks.complete_block_timeout",
            ((gen.get("processor") or {}).get("local_blocks") or {}).get("complete_block_timeout"),
        ),
    ):
        if value is None or duration_seconds(value) < year:
            problems.append(f"{label}: {path} must be >= 1y (got {value})")
    local_blocks = (gen.get("processor") or {}).get("local_blocks") or {}
    if local_blocks.get("flush_to_storage") is not True:
        problems.append(f"{label}: local_blocks.flush_to_storage must be true (metrics over old ranges)")
    if local_blocks.get("filter_server_spans") is not False:
        problems.append(f"{label}: local_blocks.filter_server_spans must be false (dnpc2otel spans are INTERNAL)")
    if not (gen.get("storage") or {}).get("path"):
        problems.append(f"{label}: metrics_generator.storage.path is required, else the generator is disabled")
    processors = (((tcfg.get("overrides") or {}).get("defaults") or {}).get("metrics_generator") or {}).get(
        "processors"
    ) or []
    if "local-blocks" not in processors:
        problems.append(f"{label}: overrides.defaults.metrics_generator.processors must include local-blocks")
    return problems


def check_tempo_server(compose: dict, tcfg: dict) -> list[str]:
    problems = []
    tname = tempo_service(compose)
    http_port = (tcfg.get("server") or {}).get("http_listen_port", 3200)
    published = {hp: cp for _, hp, cp in published_ports(compose["services"][tname])}
    if published.get(3200) not in (None, http_port):
        problems.append(f"tempo: host 3200 maps to {published[3200]}, Tempo listens on {http_port}")
    if 4317 in published or 4318 in published:
        problems.append("tempo: host ports 4317/4318 belong to Jaeger; publish Tempo's OTLP elsewhere")
    otlp = (((tcfg.get("distributor") or {}).get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    for proto in ("grpc",):
        endpoint = (otlp.get(proto) or {}).get("endpoint")
        if endpoint is None:
            problems.append(f"tempo: otlp {proto} receiver endpoint must be explicit (default is localhost only)")
        elif host_port(endpoint)[0] not in ("0.0.0.0", "", "::", tname):
            problems.append(f"tempo: otlp {proto} receiver on {endpoint} is unreachable from Jaeger")
    # the WAL and blocks must live on the persistent volume
    trace = (tcfg.get("storage") or {}).get("trace") or {}
    mounts = [t for _, t in volume_mounts(compose["services"][tname])]
    gen = tcfg.get("metrics_generator") or {}
    for key, path in (
        ("storage.trace.wal.path", (trace.get("wal") or {}).get("path")),
        ("storage.trace.local.path", (trace.get("local") or {}).get("path")),
        ("metrics_generator.storage.path", (gen.get("storage") or {}).get("path")),
        ("metrics_generator.traces_storage.path", (gen.get("traces_storage") or {}).get("path")),
    ):
        if not any(str(path or "").startswith(m.rstrip("/") + "/") for m in mounts):
            problems.append(f"tempo: {key} {path!r} is not on a mounted volume")
    return problems


def check_mounts(compose: dict) -> list[str]:
    problems = []
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in compose["services"].items():
        for source, target in volume_mounts(svc):
            if is_bind(source):
                if not (COMPOSE_FILE.parent / source).exists():
                    problems.append(f"{name}: mounted {source} -> {target} does not exist")
            elif source and source not in named:
                problems.append(f"{name}: named volume {source} is not declared")
    return problems


def check_datasources(compose: dict, datasources: list[dict], jcfg: dict, tcfg: dict) -> list[str]:
    problems = []
    uids = [d.get("uid") for d in datasources]
    if None in uids or len(set(uids)) != len(uids):
        problems.append(f"datasources: uids must be set and unique (got {uids})")
    expected = {
        "tempo": (tempo_service(compose), (tcfg.get("server") or {}).get("http_listen_port", 3200)),
        "jaeger": (
            jaeger_service(compose),
            host_port(
                (((jcfg.get("extensions") or {}).get("jaeger_query") or {}).get("http") or {}).get("endpoint", ":16686")
            )[1],
        ),
    }
    for kind, (service, port) in expected.items():
        matching = [d for d in datasources if d.get("type") == kind]
        if len(matching) != 1:
            problems.append(f"datasources: expected one {kind} datasource, found {len(matching)}")
            continue
        url = urlsplit(matching[0].get("url", ""))
        if url.hostname != service or url.port != port:
            problems.append(f"datasources: {kind} url {matching[0].get('url')} should be http://{service}:{port}")
    return problems


def check_grafana_provisioning(compose: dict) -> list[str]:
    problems = []
    gname = grafana_service(compose)
    if (
        host_path_for(compose, gname, "/etc/grafana/provisioning/datasources")
        != (GRAFANA_DIR / "provisioning" / "datasources").resolve()
    ):
        problems.append("grafana: grafana/provisioning is not mounted at /etc/grafana/provisioning")
    providers = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml")):
        providers.extend(load_yaml(path).get("providers", []) or [])
    if not providers:
        problems.append("grafana: no dashboard provider")
    for prov in providers:
        target = (prov.get("options") or {}).get("path", "")
        host_dir = host_path_for(compose, gname, target)
        if host_dir is None or not host_dir.is_dir():
            problems.append(f"grafana: dashboard path {target} is not mounted from a host directory")
        elif not list(host_dir.glob("*.json")):
            problems.append(f"grafana: no dashboard JSON in {host_dir}")
    home = compose["services"][gname].get("environment") or {}
    if isinstance(home, dict) and home.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"):
        path = host_path_for(compose, gname, home["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
        if path is None or not path.is_file():
            problems.append("grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH is not a mounted file")
    return problems


def _panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def check_dashboard(dashboard: dict, datasources: list[dict]) -> list[str]:
    problems = []
    by_uid = {d["uid"]: d.get("type") for d in datasources if d.get("uid")}
    variables = {v["name"] for v in (dashboard.get("templating") or {}).get("list", [])}
    builtin = {"__interval", "__interval_ms", "__range", "__from", "__to", "__rate_interval"}
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("dashboard: uid and title are required")
    ids = [p.get("id") for p in _panels(dashboard)]
    if len(set(ids)) != len(ids):
        problems.append(f"dashboard: panel ids are not unique: {ids}")

    def ref_ok(ref, where):
        if not isinstance(ref, dict) or ref.get("uid") not in by_uid:
            problems.append(f"{where}: datasource {ref!r} is not a provisioned uid {sorted(by_uid)}")
        elif ref.get("type") and ref["type"] != by_uid[ref["uid"]]:
            problems.append(f"{where}: datasource type {ref['type']} != provisioned {by_uid[ref['uid']]}")

    for panel in _panels(dashboard):
        where = f"panel {panel.get('title')!r}"
        if panel.get("type") in ("row", "text"):
            continue
        if not panel.get("targets"):
            problems.append(f"{where}: no targets")
        ref_ok(panel.get("datasource"), where)
        for target in panel.get("targets", []):
            ref_ok(target.get("datasource", panel.get("datasource")), where)
            query = str(target.get("query", ""))
            for var in re.findall(r"\$\{?(\w+)", query):
                if var not in variables and var not in builtin:
                    problems.append(f"{where}: query uses undefined variable ${var}")
            if target.get("queryType") == "traceql":
                if query.count("{") != query.count("}") or query.count("(") != query.count(")"):
                    problems.append(f"{where}: unbalanced TraceQL {query!r}")
                if '"' in query and query.count('"') % 2:
                    problems.append(f"{where}: unbalanced quotes in {query!r}")
    return problems


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def compose():
    return load_compose()


@pytest.fixture(scope="module")
def jaeger_cfg(compose):
    return load_yaml(jaeger_config_path(compose))


@pytest.fixture(scope="module")
def tempo_cfg(compose):
    return load_yaml(tempo_config_path(compose))


@pytest.fixture(scope="module")
def datasources():
    return provisioned_datasources()


# --------------------------------------------------------------------------
# tests on the real files


def test_compose_has_the_four_services(compose):
    jaeger_service(compose)
    tempo_service(compose)
    grafana_service(compose)


def test_images_are_pinned(compose):
    assert check_images(compose) == []


def test_mounted_files_exist(compose):
    assert check_mounts(compose) == []


def test_config_files_are_mounted_and_parse(compose):
    assert jaeger_config_path(compose).is_file()
    assert tempo_config_path(compose).is_file()


def test_jaeger_ports_pipeline_and_fanout_to_tempo(compose, jaeger_cfg, tempo_cfg):
    assert check_jaeger(compose, jaeger_cfg, tempo_cfg) == []


def test_tempo_ports_and_storage(compose, tempo_cfg):
    assert check_tempo_server(compose, tempo_cfg) == []


def test_tempo_accepts_and_finds_old_traces(tempo_cfg):
    assert check_tempo_old_traces(tempo_cfg, "grafana/tempo.yaml") == []


def test_local_tempo_config_matches_old_trace_settings():
    if not LOCAL_TEMPO_CONFIG.exists():
        pytest.skip("scripts/tempo-config.yaml not present")
    text = LOCAL_TEMPO_CONFIG.read_text(encoding="utf-8")
    # -config.expand-env=true syntax; parse with the defaults substituted
    cfg = yaml.safe_load(expand_defaults(text))
    assert check_tempo_old_traces(cfg, "scripts/tempo-config.yaml") == []
    for proto in ("grpc", "http"):
        endpoint = cfg["distributor"]["receivers"]["otlp"]["protocols"][proto]["endpoint"]
        assert host_port(endpoint)[0] in ("127.0.0.1", "localhost"), endpoint


def test_datasources_point_at_compose_services(compose, datasources, jaeger_cfg, tempo_cfg):
    assert check_datasources(compose, datasources, jaeger_cfg, tempo_cfg) == []


def test_grafana_provisioning_is_mounted(compose):
    assert check_grafana_provisioning(compose) == []


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboards_are_valid_and_use_provisioned_datasources(path, datasources):
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert check_dashboard(dashboard, datasources) == []


def test_there_is_a_dashboard():
    assert dashboard_files(), "grafana/dashboards/*.json"


def test_cli_default_endpoints_reach_jaeger_otlp_receivers(compose, jaeger_cfg):
    http_default, grpc_default, source = cli_defaults()
    jname = jaeger_service(compose)
    published = {hp: (ip, cp) for ip, hp, cp in published_ports(compose["services"][jname])}
    protocols = jaeger_cfg["receivers"]["otlp"]["protocols"]
    for proto, default in (("http", http_default), ("grpc", grpc_default)):
        host, port = host_port(default)
        assert host in ("127.0.0.1", "localhost"), f"{source}: {default}"
        assert port in published, f"{source}: {default} is not published by {jname}"
        ip, container_port = published[port]
        assert ip in LOOPBACK_OR_ANY, f"host port {port} bound to {ip}, not reachable on loopback"
        assert container_port == host_port(protocols[proto]["endpoint"])[1]


# --------------------------------------------------------------------------
# the checks can fail


def test_checks_catch_a_wrong_otlp_port(compose, jaeger_cfg, tempo_cfg):
    broken = copy.deepcopy(jaeger_cfg)
    broken["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = "0.0.0.0:4319"
    assert any("4317" in p for p in check_jaeger(compose, broken, tempo_cfg))


def test_checks_catch_a_wrong_published_port(compose, jaeger_cfg, tempo_cfg):
    broken = copy.deepcopy(compose)
    jname = jaeger_service(broken)
    broken["services"][jname]["ports"] = [
        str(p).replace(":4318:4318", ":4318:4319") for p in broken["services"][jname]["ports"]
    ]
    assert any("4318" in p for p in check_jaeger(broken, jaeger_cfg, tempo_cfg))


def test_checks_catch_a_tempo_exporter_to_the_wrong_port(compose, jaeger_cfg, tempo_cfg):
    broken = copy.deepcopy(jaeger_cfg)
    for ref in broken["exporters"]:
        if ref.startswith("otlp"):
            broken["exporters"][ref]["endpoint"] = "tempo:4318"
    assert check_jaeger(compose, broken, tempo_cfg)


def test_checks_catch_unpinned_images(compose):
    broken = copy.deepcopy(compose)
    name = grafana_service(broken)
    broken["services"][name]["image"] = "grafana/grafana:latest"
    assert check_images(broken)
    broken["services"][name]["image"] = "grafana/grafana"
    assert check_images(broken)


def test_checks_catch_a_datasource_on_the_wrong_port(compose, datasources, jaeger_cfg, tempo_cfg):
    broken = copy.deepcopy(datasources)
    for d in broken:
        if d["type"] == "tempo":
            d["url"] = "http://tempo:3100"
    assert check_datasources(compose, broken, jaeger_cfg, tempo_cfg)


def test_checks_catch_an_unknown_datasource_uid(datasources):
    dashboard = json.loads(dashboard_files()[0].read_text(encoding="utf-8"))
    for panel in _panels(dashboard):
        if panel.get("targets"):
            panel["datasource"] = {"type": "tempo", "uid": "no-such-uid"}
            break
    assert check_dashboard(dashboard, datasources)


def test_checks_catch_default_tempo_windows(tempo_cfg):
    broken = copy.deepcopy(tempo_cfg)
    del broken["storage"]["trace"]["wal"]["ingestion_time_range_slack"]
    broken["query_frontend"]["search"]["max_duration"] = "168h"
    broken["metrics_generator"]["processor"]["local_blocks"]["complete_block_timeout"] = "1h"
    assert len(check_tempo_old_traces(broken, "broken")) >= 3


def test_duration_parser():
    assert duration_seconds("87600h") == 87600 * 3600
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds(0) == 0
    with pytest.raises(AssertionError):
        duration_seconds("ten minutes")
