"""The real Jaeger UI in headless Chromium, as a user sees it.

Helpers for tests/test_jaeger_ui.py and, run as a script, the README's tour screenshots:

    python tests/jaeger_ui.py [--out docs/images]

starts a real Jaeger v2 (tests/jaeger_fixture.py, serving the UI bundled in third_party/jaeger-ui), replays the
README's example run into it and saves `jaeger-search.png` (the search page) and `jaeger-trace.png` (its trace).

The browser is Debian's Chromium (/usr/bin/chromium) driven by Playwright from PyPI: never `playwright install`,
which downloads a browser build. Without the background-networking flags Chromium keeps trying to reach Google's
services, which this machine's closed network refuses.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# The README's example (the same real run as tests/data/corpus/htex-2026).
EXAMPLE = REPO / "examples" / "htex-2026" / "runinfo"
VIEWPORT = {"width": 1400, "height": 900}
UI_TIMEOUT_MS = 30_000


def browser_missing() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (PyPI) is not installed: pip install -e '.[test]'"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh does)"
    return None


@contextmanager
def browser_page() -> Iterator[Any]:
    """A page in a fresh headless Chromium (new temporary profile), UTC and en-US so pages look the same anywhere."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


# --------------------------------------------------------------------------------------
# what the DuckDB file says
# --------------------------------------------------------------------------------------


def replay_into(run_dir: Path, db: Path, otlp_http_endpoint: str) -> str:
    """`dnpc2otel replay RUN --otlp-endpoint …`, as a user runs it; returns the (single) run's trace id."""
    proc = subprocess.run(
        [sys.executable, "-m", "dnpc2otel.cli", "replay", str(run_dir), "--duckdb", str(db), "-q",
         "--otlp-endpoint", otlp_http_endpoint],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dnpc2otel replay failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with duckdb.connect(str(db), read_only=True) as con:
        (trace_id,), *more = con.execute("SELECT trace_id FROM runs").fetchall()
    assert not more, f"{run_dir} has several runs"
    return trace_id


def span_count_and_depth(db: Path, trace_id: str) -> tuple[int, int]:
    """Spans of the trace and its depth (levels from a root down its parent ids; a root is level 1)."""
    with duckdb.connect(str(db), read_only=True) as con:
        (count,) = con.execute("SELECT count(*) FROM spans WHERE trace_id = ?", [trace_id]).fetchone()
        (depth,) = con.execute(
            """WITH RECURSIVE levels(span_id, level) AS (
                   SELECT span_id, 1 FROM spans
                   WHERE trace_id = $1 AND coalesce(parent_span_id, '') = ''
                   UNION ALL
                   SELECT s.span_id, l.level + 1 FROM spans s JOIN levels l ON s.parent_span_id = l.span_id
                   WHERE s.trace_id = $1)
               SELECT max(level) FROM levels""",
            [trace_id],
        ).fetchone()
    return count, depth


def spans_by_id(db: Path, trace_id: str) -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT span_id, parent_span_id, name, service_name, context_type, status_code FROM spans "
            "WHERE trace_id = ?", [trace_id],
        ).fetchall()
    keys = ("span_id", "parent_span_id", "name", "service_name", "context_type", "status_code")
    return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}


def run_window_us(db: Path, trace_id: str, margin_s: int = 60) -> tuple[int, int]:
    """The run's time range in µs (the search page's start/end), widened by a margin."""
    with duckdb.connect(str(db), read_only=True) as con:
        start, end = con.execute(
            "SELECT start_time_unix_nano, end_time_unix_nano FROM runs WHERE trace_id = ?", [trace_id]
        ).fetchone()
    return start // 1000 - margin_s * 1_000_000, end // 1000 + margin_s * 1_000_000


# --------------------------------------------------------------------------------------
# the trace page
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the trace page's span tree, as displayed."""

    index: int
    level: int  # 0 for a root
    ancestor_ids: list[str]  # span ids of the ancestors, outermost first (the tree's indent guides)
    service: str
    operation: str
    error_icon: bool


def open_trace(page: Any, base_url: str, trace_id: str) -> dict[str, Any]:
    """Open /trace/<id> and wait for it; returns the trace JSON the page itself loaded."""
    with page.expect_response(lambda r: f"/api/traces/{trace_id}" in r.url) as response:
        page.goto(f"{base_url}/trace/{trace_id}")
    page.locator(".TracePageHeader--overviewItems").wait_for()
    page.locator(".span-row").first.wait_for()
    return response.value.json()["data"][0]


def header_items(page: Any) -> dict[str, str]:
    """The trace header's summary ("Trace Start", "Duration", "Services", "Depth", "Total Spans")."""
    items = {}
    for item in page.locator(".TracePageHeader--overviewItems .LabeledList--item").all():
        label = item.locator(".LabeledList--label")
        if label.count():
            items[label.inner_text().strip()] = item.locator("strong").inner_text().strip()
    return items


def expand_all(page: Any) -> None:
    """The span tree's "Expand All" (third of the timeline header's collapser buttons)."""
    page.locator(".TimelineCollapser svg").nth(2).click()


def widen_name_column(page: Any, pixels: int) -> None:
    """Drag the divider between the span names and the timeline to the right (long operation names)."""
    box = page.locator(".TimelineHeaderRow .VerticalResizer--dragger").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=5)
    page.mouse.up()


def span_rows(page: Any) -> list[Row]:
    """Every row of the span tree (the tree is virtualised: it renders all rows of a trace this size)."""
    raw = page.locator(".span-row .span-name-wrapper").evaluate_all(
        """els => els.map(e => ({
            guides: Array.from(e.querySelectorAll('.SpanTreeOffset--indentGuide')).map(g => g.dataset.ancestorId),
            service: (e.querySelector('.span-svc-name') || {}).textContent || '',
            operation: (e.querySelector('.endpoint-name') || {}).textContent || '',
            error: !!e.querySelector('.SpanBarRow--errorIcon'),
        }))"""
    )
    return [
        Row(i, len(r["guides"]), [g for g in r["guides"] if g != "root"], r["service"].strip(),
            r["operation"].strip(), r["error"])
        for i, r in enumerate(raw)
    ]


def chain_above(rows: list[Row], row: Row) -> list[Row]:
    """The rows a row is nested in, outermost first: in the tree's pre-order, the nearest row above at each level."""
    chain, level = [], row.level
    for above in reversed(rows[: row.index]):
        if above.level == level - 1:
            chain.append(above)
            level -= 1
            if level == 0:
                break
    return chain[::-1]


def warnings_shown(page: Any, span_id: str) -> list[str]:
    """Open a span's detail (found with the page's Find box, as a user would) and read its "Warnings" section."""
    find = page.get_by_placeholder("Find...")
    find.fill(span_id)
    # the page finds what its URL's uiFind says, set from the box after a debounce: wait for it, not for stale rows
    page.wait_for_url(re.compile(f"[?&]uiFind={span_id}"))
    matches = page.locator(".span-row.is-matching-filter")
    matches.first.wait_for()
    for i in range(matches.count()):  # Find also matches tags and logs: open each match until it is this span
        matches.nth(i).locator("a.span-name").click()
        detail = page.locator(".detail-row")
        detail.wait_for()
        texts = None
        if span_id in detail.locator(".SpanDetail--debugInfo").inner_text():
            section = detail.locator(".AccordianWarnings")
            texts = []
            if section.count():
                section.locator(".AccordianWarnings--header").click()
                texts = [t.strip() for t in section.locator(".TextList li").all_inner_texts()] or ["(empty)"]
        # close it with the detail's own toggle (the coloured bar on its left; it has no size to click on)
        detail.locator(".detail-row-expanded-accent").dispatch_event("click")
        detail.wait_for(state="detached")
        if texts is not None:
            find.fill("")
            page.wait_for_url(lambda url: "uiFind=" not in url)
            return texts
    raise AssertionError(f"span {span_id} not found with the trace page's Find box")


def warning_candidates(trace: dict[str, Any]) -> list[str]:
    """Spans that the UI would give a "Warnings" section: those Jaeger's query service flagged (clock skew,
    negative duration, …) and those with a duplicate tag (jaeger-ui adds that warning itself)."""
    flagged = []
    for span in trace["spans"]:
        pairs = [(t["key"], str(t["value"])) for t in span.get("tags") or []]
        if span.get("warnings") or len(pairs) != len(set(pairs)):
            flagged.append(span["spanID"])
    return flagged


# --------------------------------------------------------------------------------------
# the search page
# --------------------------------------------------------------------------------------


def listed_services(page: Any, base_url: str) -> list[str]:
    """Open /search and the Service drop-down; the services it lists."""
    page.goto(f"{base_url}/search")
    service = page.locator(".ant-form-item", has=page.locator("label", has_text="Service")).locator(".ant-select")
    service.first.click()
    options = page.locator(".ant-select-item-option")
    options.first.wait_for()
    names = [o.get_attribute("title") or o.inner_text() for o in options.all()]
    page.keyboard.press("Escape")
    return names


def search_results(page: Any, base_url: str, service: str, window_us: tuple[int, int]) -> list[dict[str, Any]]:
    """Search a service's traces in a time range (the form's "Custom Time Range", here as the page's URL)."""
    start, end = window_us
    page.goto(f"{base_url}/search?service={service}&start={start}&end={end}&lookback=custom&limit=20")
    page.locator(".ResultItem").first.wait_for()
    results = []
    for item in page.locator(".ResultItem").all():
        counts = {}
        for tag in item.locator(".ResultItem--serviceTag").all_inner_texts():  # "parsl.dfk (68)"
            m = re.fullmatch(r"\s*(\S+)\s+\((\d+)\)\s*", tag)
            if m:
                counts[m.group(1)] = int(m.group(2))
        # (the build drops the components' data-testid markers: tags are found by their antd classes)
        tags = [t.strip() for t in item.locator(".ant-col-4 .ant-tag").all_inner_texts()]  # "136 Spans", "12 Errors"
        results.append({
            "title": item.locator(".ResultItemTitle--title").inner_text().strip(),
            "spans": next((t for t in tags if t.endswith("Spans")), None),
            "errors": next((t for t in tags if t.endswith(("Error", "Errors"))), None),
            "services": counts,
        })
    return results


# --------------------------------------------------------------------------------------
# the README's screenshots
# --------------------------------------------------------------------------------------


def make_screenshots(out: Path) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from jaeger_fixture import _locate_jaeger, _make_server, jaeger_ui_assets

    if jaeger_ui_assets() is None:
        raise SystemExit("jaeger_ui.py: no built Jaeger UI (third_party/jaeger-ui, or $DNPC2OTEL_JAEGER_UI)")
    if why := browser_missing():
        raise SystemExit(f"jaeger_ui.py: {why}")
    kind, what = _locate_jaeger()
    if kind is None:
        raise SystemExit(f"jaeger_ui.py: no Jaeger: {what}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dnpc2otel-shots-") as tmp:
        server = _make_server(kind, what, Path(tmp) / "jaeger.log")
        server.start()
        try:
            db = Path(tmp) / "example.duckdb"
            trace_id = replay_into(EXAMPLE, db, server.otlp_http_endpoint)
            server.wait_for_spans(trace_id, span_count_and_depth(db, trace_id)[0])
            with browser_page() as page:
                search_results(page, server.query_url, "parsl.dfk", run_window_us(db, trace_id))
                page.wait_for_timeout(1500)  # the duration chart's points grow in: let them
                page.screenshot(path=str(out / "jaeger-search.png"))
                open_trace(page, server.query_url, trace_id)
                widen_name_column(page, 160)
                page.screenshot(path=str(out / "jaeger-trace.png"))
        finally:
            server.stop()
    return [out / "jaeger-search.png", out / "jaeger-trace.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Remake the README's Jaeger UI screenshots.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder (default docs/images)")
    for path in make_screenshots(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
