"""`dnpc2otel report`: a self-contained HTML page of a real run, checked as a user sees it in headless Chromium
(loads without errors, every plot drawn), and its contents against the run's own tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, corpus_runs

from dnpc2otel import replay
from dnpc2otel.report import render

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ["run", "gantt", "concurrency", "durations", "utilisation", "critical-path", "failures", "resources",
            "slowest", "disagreements"]


@pytest.fixture(scope="module")
def features_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("report") / "features.duckdb"
    replay(CORPUS / "features-2026" / "runinfo", db)
    return db


def test_report_renders_in_chromium_with_every_plot(features_db, tmp_path):
    if not CHROMIUM.exists():
        if __import__("os").environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (scripts/test.sh installs it)")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "report.html"
    stats = render(features_db, out)
    assert stats.plots == 7
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        widths = page.evaluate("[...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
        ids = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
        header = page.inner_text("#run")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], "the page loads nothing"
    assert len(widths) == 7 and all(w > 300 and h > 100 for _, w, h in widths), widths
    assert ids == SECTIONS
    with duckdb.connect(str(features_db), read_only=True) as con:
        tasks = con.execute("SELECT count(*) FROM spans WHERE context_type = 'task'").fetchone()[0]
        failed = con.execute("SELECT count(*) FROM spans WHERE context_type = 'task' AND status_code = 'ERROR'"
                             ).fetchone()[0]
    assert f"{tasks} ({failed} failed)" in header


def test_report_tables_say_what_the_database_says(features_db, tmp_path):
    out = tmp_path / "r.html"
    render(features_db, out)
    text = out.read_text()
    with duckdb.connect(str(features_db), read_only=True) as con:
        slowest = con.execute("SELECT task_id FROM analysis.task_breakdown ORDER BY duration_s DESC NULLS LAST, "
                              "task_id LIMIT 1").fetchone()[0]
        exceptions = {r[0] for r in con.execute("SELECT DISTINCT exception FROM analysis.failure_cost "
                                                "WHERE exception IS NOT NULL").fetchall()}
        kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM disagreements").fetchall()}
        # a failed task that depended on others, and (from the spans alone) the dependency that finished last
        dependent = con.execute("""SELECT s.attributes->>'dnpc.context_id', t.attributes->>'dnpc.context_id'
            FROM span_links l JOIN spans s ON s.span_id = l.span_id JOIN spans t ON t.span_id = l.linked_span_id
            WHERE l.attributes->>'dnpc.relation' = 'depends_on' AND s.status_code = 'ERROR'
            ORDER BY s.span_id, t.end_time_unix_nano DESC LIMIT 1""").fetchone()
    slow_section = text.split('id="slowest"')[1].split("</section>")[0]
    assert re.search(rf"<tr><td class=n>{slowest}</td>", slow_section), "the slowest task comes first"
    failures = text.split('id="failures"')[1].split("</section>")[0]
    assert exceptions and all(e in failures for e in exceptions)
    assert all(k in text.split('id="disagreements"')[1] for k in kinds)
    assert dependent, "features-2026 has a dependency-failed combine"
    row = re.search(rf"<tr><td class=n>{dependent[0]}</td>.*?</tr>", slow_section)
    assert row and row.group(0).endswith(f"<td>task {dependent[1]}</td></tr>"), "its chain starts at its last one"
    assert "<script" not in text and "http://" not in text and "https://" not in text


@pytest.mark.parametrize("run", corpus_runs(), ids=[r.parent.name for r in corpus_runs()])
def test_report_of_every_corpus_run_is_bounded(run, tmp_path):
    # through the CLI, straight from the run directory (replayed into memory)
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel", "report", str(run), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Report:" in proc.stdout and out.stat().st_size < 2_000_000
    assert out.read_text().count("<img ") >= 4  # gantt, concurrency, durations, utilisation at least


def test_report_errors_are_one_line(tmp_path):
    for bad, why in ((tmp_path / "missing.duckdb", "no such"), (tmp_path / "junk.duckdb", "DuckDB")):
        if "junk" in bad.name:
            bad.write_text("not a database")
        proc = subprocess.run([sys.executable, "-m", "dnpc2otel", "report", str(bad), "-o", str(tmp_path / "o.html")],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o.html").exists()
