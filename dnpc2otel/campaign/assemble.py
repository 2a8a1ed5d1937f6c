"""Parts → one DuckDB file: the per-run DuckDB files of a fanned-out campaign, as `replay` would write it.

The parts' tables are the `reconciled` stage of their runs; their union (the sources shared by the runs,
read by every part alike, counted once) is put back into the `reconciled` schema of a workspace, and the
rest is `replay`'s own code: the campaign span, `store.write`, the summary.
"""

from __future__ import annotations

from pathlib import Path

from ..export import store
from ..pipeline import DEFAULT_MEMORY_LIMIT, ReplaySummary, _summarise, definitions_for, workspace
from ..sources.templates import quote_literal
from ..tables import RECONCILED, SOURCES, STAGE_OUTPUTS, create_stage, insert
from . import context as campaign_context


def assemble(path: Path, parts: list[Path], summaries: list[ReplaySummary], target: Path, options,
             campaign: str | None = None) -> ReplaySummary:
    """One DuckDB file `target` from the `parts` of the campaign at `path` (their replay summaries beside)."""
    catalog, selection, _ = definitions_for(path, list(options.converter_dirs), list(options.converter_files))
    root = selection.root.resolve()
    summary = ReplaySummary(duckdb_path=target, run_config=next((s.run_config for s in summaries if s.run_config),
                                                                None))
    seen_sources: set[str] = set()
    for s in summaries:
        summary.warnings += [w for w in s.warnings if w not in summary.warnings]
        summary.sources += [f for f in s.sources if f.source not in seen_sources]
        seen_sources.update(f.source for f in s.sources)
        summary.dangling_links += s.dangling_links
    tables = [t for t in STAGE_OUTPUTS[RECONCILED] if t.name != "dangling_links"]
    with workspace(options.memory_limit) as con:
        create_stage(con, RECONCILED)
        for i, part in enumerate(parts):
            con.execute(f"ATTACH {quote_literal(str(part))} AS part{i} (READ_ONLY)")
            for t in tables:
                cols = ", ".join(t.column_names)
                if t is SOURCES:  # shared files: the same row from every part that read them
                    insert(con, RECONCILED, t, f"SELECT {cols} FROM part{i}.{t.name} EXCEPT "
                                               f"SELECT {cols} FROM {RECONCILED}.{t.name}")
                else:
                    insert(con, RECONCILED, t, f"SELECT {cols} FROM part{i}.{t.name}")
            con.execute(f"DETACH part{i}")
        summary.campaign = campaign_context.add_if_wanted(con, RECONCILED, campaign, root, catalog.system)
        store.write(con, target, str(root), catalog.views)
        _summarise(con, summary)
        summary.expected_parents = {t: catalog.types[t].parents for t in summary.unbound if t in catalog.types}
    summary.lines = store.summarise(target, [r["trace_id"] for r in summary.runs], catalog.summaries,
                                    options.memory_limit or DEFAULT_MEMORY_LIMIT)
    return summary
