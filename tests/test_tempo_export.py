"""replay → a real Grafana Tempo (built from the Go module proxy by scripts/tempo.sh) → TraceQL search.

The spans are months in the past by the time a user browses them: the run's own time window must find
them (the settings in scripts/tempo-config.yaml and grafana/tempo.yaml that make this work are
explained in grafana/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_runs

from dnpc2otel import replay
from dnpc2otel.export.otlp import OtlpConfig, export

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TEMPO_SH = REPO / "scripts" / "tempo.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


@pytest.fixture(scope="module")
def tempo(tmp_path_factory):
    if not shutil.which("go") and not os.environ.get("DNPC2OTEL_TEMPO_BIN"):
        if os.environ.get("CI"):
            pytest.fail("Go is needed to build Tempo for the integration tests")
        pytest.skip("no Go toolchain to build Tempo (scripts/tempo.sh build)")
    binary = os.environ.get("DNPC2OTEL_TEMPO_BIN") or subprocess.run(
        ["bash", str(TEMPO_SH), "path"], capture_output=True, text=True, check=True, timeout=1800
    ).stdout.strip()
    data = tmp_path_factory.mktemp("tempo")
    ports = {k: str(_free_port()) for k in ("TEMPO_HTTP_PORT", "TEMPO_GRPC_PORT", "TEMPO_OTLP_GRPC_PORT",
                                              "TEMPO_OTLP_HTTP_PORT", "TEMPO_MEMBERLIST_PORT")}
    env = {**os.environ, **ports, "TEMPO_DATA_DIR": str(data)}
    log = open(data / "tempo.log", "wb")
    config = REPO / "scripts" / "tempo-config.yaml"
    proc = subprocess.Popen([binary, f"-config.file={config}", "-config.expand-env=true"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    http = f"http://127.0.0.1:{ports['TEMPO_HTTP_PORT']}"
    try:
        deadline = time.monotonic() + 120
        while _get(f"{http}/ready")[1].strip() != b"ready":
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Tempo did not become ready:\n" + (data / "tempo.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"http": http, "otlp_http": f"http://127.0.0.1:{ports['TEMPO_OTLP_HTTP_PORT']}"}
    finally:
        # Tempo may hang on SIGTERM once it has served queries (grafana/tempo#5733); its WAL makes a kill safe
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _search(tempo, query: str, start_s: int, end_s: int) -> set[str]:
    params = urllib.parse.urlencode({"q": query, "start": start_s, "end": end_s, "limit": 100})
    status, body = _get(f"{tempo['http']}/api/search?{params}")
    assert status == 200, body[:500]
    return {t["traceID"].rjust(32, "0") for t in json.loads(body).get("traces", [])}


def test_replayed_run_is_found_by_traceql_in_its_own_time_window(tempo, tmp_path):
    run = corpus_runs()[0]
    db = tmp_path / "tempo.duckdb"
    replay(run, db)
    export(db, OtlpConfig.from_env(tempo["otlp_http"], "http/protobuf"))
    with duckdb.connect(str(db), read_only=True) as c:
        trace_id, start_ns, end_ns = c.execute(
            "SELECT trace_id, start_time_unix_nano, end_time_unix_nano FROM runs").fetchone()
        n_spans = c.execute("SELECT count(*) FROM spans").fetchone()[0]
        n_failed = c.execute("""SELECT count(*) FROM spans WHERE context_type = 'try'
                                AND attributes->>'$."parsl.try.final_state"' = 'failed'""").fetchone()[0]
    assert n_failed > 0
    window = (start_ns // 10**9 - 60, end_ns // 10**9 + 60)  # the run happened long before "now"

    found: set[str] = set()
    deadline = time.monotonic() + 90
    while trace_id not in found and time.monotonic() < deadline:
        found = _search(tempo, '{ span.parsl.try.final_state = "failed" && status = error }', *window)
        time.sleep(1)
    assert trace_id in found
    # the slowest-task query of the dashboard finds it too, and a window elsewhere does not
    assert trace_id in _search(tempo, '{ span.dnpc.context_type = "task" && duration > 1ms }', *window)
    assert trace_id not in _search(tempo, '{ span.dnpc.context_type = "task" }', window[1] + 3600, window[1] + 7200)
    # the whole trace, by id, with every span
    status, body = _get(f"{tempo['http']}/api/traces/{trace_id}")
    assert status == 200
    doc = json.loads(body)
    batches = doc.get("batches") or doc.get("resourceSpans") or []
    spans = [s for b in batches for ss in (b.get("scopeSpans") or b.get("instrumentationLibrarySpans") or [])
             for s in ss["spans"]]
    assert len(spans) == n_spans
