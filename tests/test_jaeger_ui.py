"""A replayed run in the real Jaeger UI (jaeger-ui v1.76.0, bundled in third_party/jaeger-ui), in headless Chromium.

What a user sees is compared with the DuckDB file of the same replay: the trace header's span count and depth,
the nesting workflow › task › try › executor task › worker execution in the span tree, error icons exactly on
the failed spans, no "Warnings" section, and on the search page the services and the run's trace. Screenshots are
kept in $DNPC2OTEL_ARTEFACTS (else the test's tmp_path); their paths are printed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import CORPUS
from jaeger_fixture import BUNDLED_UI, jaeger_ui_assets
from jaeger_ui import (
    browser_missing,
    browser_page,
    chain_above,
    expand_all,
    header_items,
    listed_services,
    open_trace,
    replay_into,
    run_window_us,
    search_results,
    span_count_and_depth,
    span_rows,
    spans_by_id,
    warning_candidates,
    warnings_shown,
)

pytestmark = pytest.mark.slow  # starts Jaeger and a browser

RUN = CORPUS / "htex-2026" / "runinfo"
CHAIN = ["workflow", "task", "try", "executor_task", "worker_execution"]


@pytest.fixture(scope="module")
def ui(request):
    """The Jaeger fixture serving the real UI; skips (with the reason) where there is none or no browser."""
    if jaeger_ui_assets() is None:
        override = os.environ.get("DNPC2OTEL_JAEGER_UI")
        pytest.skip(f"no built Jaeger UI: $DNPC2OTEL_JAEGER_UI={override} has no index.html" if override else
                    f"no built Jaeger UI: {BUNDLED_UI} is absent (and $DNPC2OTEL_JAEGER_UI is unset)")
    if why := browser_missing():
        if os.environ.get("CI"):
            pytest.fail(f"no browser (CI is set, so failing rather than skipping): {why}")
        pytest.skip(f"no browser: {why}")
    jaeger = request.getfixturevalue("jaeger")
    status, body = jaeger._request(f"{jaeger.query_url}/search")
    assert status == 200 and b"<title>Jaeger UI</title>" in body, "Jaeger does not serve the built UI"
    return jaeger


@pytest.fixture(scope="module")
def replayed(ui, tmp_path_factory) -> tuple[Path, str]:
    """htex-2026 replayed into the UI's Jaeger (emptied first: other tests send the same trace ids)."""
    ui.restart()
    db = tmp_path_factory.mktemp("jaeger_ui") / "htex-2026.duckdb"
    trace_id = replay_into(RUN, db, ui.otlp_http_endpoint)
    ui.wait_for_spans(trace_id, span_count_and_depth(db, trace_id)[0])
    return db, trace_id


@pytest.fixture
def artefacts(request, tmp_path) -> Path:
    base = os.environ.get("DNPC2OTEL_ARTEFACTS")
    folder = Path(base) / "jaeger-ui" if base else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep(request, page, path: Path) -> None:
    """Screenshot, and say where it is even when pytest captures output."""
    page.screenshot(path=str(path))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{request.node.name}: screenshot {path}")


def test_trace_page_shows_the_replayed_trace(ui, replayed, artefacts, request):
    db, trace_id = replayed
    want_count, want_depth = span_count_and_depth(db, trace_id)
    spans = spans_by_id(db, trace_id)
    with browser_page() as page:
        loaded = open_trace(page, ui.query_url, trace_id)
        keep(request, page, artefacts / "trace.png")

        header = header_items(page)
        assert int(header["Total Spans"]) == want_count, header
        assert int(header["Depth"]) == want_depth, header
        assert int(header["Services"]) == len({s["service_name"] for s in spans.values()}), header

        expand_all(page)
        rows = span_rows(page)
        assert len(rows) == want_count
        # every worker execution sits under its executor task, try, task and workflow, in the tree a user sees
        executions = [r for r in rows if r.operation == "worker_execution"]
        assert len(executions) == sum(s["context_type"] == "worker_execution" for s in spans.values()) > 0
        for row in executions:
            above = chain_above(rows, row)
            assert [spans[i]["context_type"] for i in row.ancestor_ids] == CHAIN[:-1], row
            assert [(r.service, r.operation) for r in above] == [
                (spans[i]["service_name"], spans[i]["name"]) for i in row.ancestor_ids
            ], row
        # the failed tries and tasks (flaky apps) carry the error icon, nothing else does
        errors = Counter((r.service, r.operation) for r in rows if r.error_icon)
        failed = Counter((s["service_name"], s["name"]) for s in spans.values() if s["status_code"] == "ERROR")
        assert errors == failed and failed

        # no span shows a "Warnings" section: every span the loaded data gives one, and one whole chain, opened
        executor_task = executions[0].ancestor_ids[-1]
        chain = executions[0].ancestor_ids + [
            i for i, s in spans.items()
            if s["parent_span_id"] == executor_task and s["context_type"] == "worker_execution"
        ]
        shown = {}
        for span_id in dict.fromkeys(warning_candidates(loaded) + chain):
            if texts := warnings_shown(page, span_id):
                s = spans[span_id]
                shown[f"{s['context_type']} {s['name']!r} ({s['service_name']}, {span_id})"] = texts
        if shown:
            keep(request, page, artefacts / "trace-warnings.png")
        assert not shown, "Jaeger UI shows warnings on:\n" + "\n".join(f"  {k}: {v}" for k, v in shown.items())


def test_search_page_lists_the_services_and_the_run(ui, replayed, artefacts, request):
    db, trace_id = replayed
    spans = spans_by_id(db, trace_id)
    with browser_page() as page:
        assert listed_services(page, ui.query_url) == sorted({s["service_name"] for s in spans.values()})

        results = search_results(page, ui.query_url, "parsl.dfk", run_window_us(db, trace_id))
        keep(request, page, artefacts / "search.png")
        root = next(s for s in spans.values() if s["context_type"] == "workflow")
        assert len(results) == 1, results
        (result,) = results
        assert result["title"].startswith(f"parsl.dfk: {root['name']}") and trace_id[:7] in result["title"]
        assert result["spans"] == f"{len(spans)} Spans"
        failed = sum(s["status_code"] == "ERROR" for s in spans.values())
        assert result["errors"] == (f"{failed} Error{'s' if failed > 1 else ''}" if failed else None)
        assert result["services"] == dict(Counter(s["service_name"] for s in spans.values()))


def test_a_warning_jaeger_gives_is_seen(ui):
    """The warnings check above sees a "Warnings" section where Jaeger gives one: here a child that ends after
    its parent (Jaeger's clock-skew check; scripts/jaeger-config.yaml turns the adjustment off, not the warning)."""
    from opentelemetry import trace as otel_trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "dnpc2otel.ui-selftest"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=ui.otlp_http_traces_url, timeout=10)))
    tracer = provider.get_tracer("dnpc2otel.ui-selftest")
    t0 = 1_795_291_145_000_000_000  # fixed times: the spans' lengths are what matters
    parent = tracer.start_span("parent", start_time=t0)
    child = tracer.start_span("child", context=otel_trace.set_span_in_context(parent), start_time=t0 + 50_000_000)
    child.end(end_time=t0 + 150_000_000)
    parent.end(end_time=t0 + 100_000_000)
    provider.shutdown()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    child_id = f"{child.get_span_context().span_id:016x}"
    ui.wait_for_spans(trace_id, 2)
    with browser_page() as page:
        loaded = open_trace(page, ui.query_url, trace_id)
        assert warning_candidates(loaded) == [child_id]
        shown = warnings_shown(page, child_id)
    # (Jaeger 2.13 lists this warning twice on the span; the UI shows what it was given)
    assert shown == next(s["warnings"] for s in loaded["spans"] if s["spanID"] == child_id), shown
    assert shown and all("clock skew" in w for w in shown), shown
