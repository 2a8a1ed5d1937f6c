"""Remake the README's report screenshot: `python tests/report_shot.py [--out docs/images]`.

Replays a bundled real run (features-2026: worker_debug, so the interchange times every task's queue),
renders its report and photographs the top of the page in headless Chromium
(Debian's /usr/bin/chromium through Playwright), as tests/test_report.py opens it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from dnpc2otel import replay
    from dnpc2otel.report import render

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "example.duckdb"
        replay(REPO / "tests" / "data" / "corpus" / "features-2026" / "runinfo", db)
        html = Path(tmp) / "report.html"
        render(db, html)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.goto(html.as_uri())
            args.out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out / "report.png"))
            browser.close()
    print(args.out / "report.png")


if __name__ == "__main__":
    main()
