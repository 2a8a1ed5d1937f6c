"""The report's HTML: one self-contained file (styles inline, plots as data: URIs, no script, nothing fetched),
with bounded tables (the slowest tasks, failures, disagreements: the top rows, the rest counted)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
nav a { margin-right: 1em; } .muted { color: #666; } figure { margin: 0.5em 0; } img { max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 12.5px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } dl { display: grid;
grid-template-columns: max-content auto; gap: 2px 1.5em; } dt { color: #666; } dd { margin: 0; }
"""


@dataclass
class Section:
    anchor: str
    title: str
    body: str


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def figure(png: bytes, caption: str, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="muted">{esc(caption)}</figcaption></figure>')


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int] | None = None,
          total: int | None = None) -> str:
    numeric = numeric or set()

    def cell(i: int, v: object, tag: str = "td") -> str:
        if isinstance(v, float):
            v = f"{v:,.3f}"
        elif isinstance(v, int) and not isinstance(v, bool):
            v = f"{v:,}"
        return f'<{tag}{" class=n" if i in numeric else ""}>{esc(v)}</{tag}>'

    head = "".join(cell(i, h, "th") for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    more = (f'<p class="muted">{total - len(rows):,} more rows not shown (all of them are in the DuckDB file).</p>'
            if total is not None and total > len(rows) else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def facts(items: Sequence[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def document(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    parts = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p><nav>{nav}</nav>{parts}'
            f"</body></html>\n")
