"""`replay`: a run directory → DuckDB. The CLI's `dnpc2otel replay` is this function.

    sources.observe  →  observed.*  →  reconcile.reconcile  →  reconciled.*  →  export.store.write  →  file
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .campaign import context as campaign_context
from .errors import UserError, first_line
from .export import store
from .reconcile import DEFAULT_THRESHOLD_MS, clock, reconcile
from .sources import FileStats, definitions, observe, parts, runconfig, rundir
from .tables import OBSERVED, RECONCILED, create_stage

DEFAULT_DUCKDB = "dnpc2otel.duckdb"
# DuckDB's own default is 80% of RAM: memory then grows with the run (7.4 GiB at 105k tasks). Bounded instead,
# work spills to disk: peak RSS 1.7 GiB at 105k tasks, at about the same speed (bench/README.md).
DEFAULT_MEMORY_LIMIT = "1GB"


@dataclass
class ReplaySummary:
    duckdb_path: Path
    runs: list[dict] = field(default_factory=list)
    contexts: dict[str, int] = field(default_factory=dict)
    spans: int = 0
    links: int = 0
    events: int = 0
    observations: int = 0
    dangling_links: int = 0
    disagreements: dict[str, tuple[int, float | None]] = field(default_factory=dict)  # kind → (count, max ms)
    clocks: list[dict] = field(default_factory=list)  # measured skew per host clock
    # contexts left under the run's root for want of a parent: type → (no source names one, parents in conflict)
    unbound: dict[str, tuple[int, int]] = field(default_factory=dict)
    expected_parents: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type → its parent types
    inferred: dict[str, int] = field(default_factory=dict)  # type → contexts bound by inference (dnpc.binding)
    lines: dict[str, str] = field(default_factory=dict)  # summary lines the converter definitions ask for
    sources: list[FileStats] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exported_spans: int | None = None
    run_config: Path | None = None  # the dnpc2otel.toml whose converters were used
    campaign: str | None = None  # the campaign span's name, when one was made (campaign/context.py)
    run_dir: Path | None = None  # the run_dir read (the given folder, its parent, or the runinfo/ inside it)

    @property
    def lines_not_understood(self) -> int:
        return sum(s.not_understood for s in self.sources)

    @property
    def records_unused(self) -> int:
        """Records of a format that no rule turned into an observation (DEBUG chatter, or a template not read)."""
        return sum(s.records - s.records_used for s in self.sources)


@contextmanager
def workspace(memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB that spills to a temporary directory (removed after) instead of growing unbounded."""
    with tempfile.TemporaryDirectory(prefix="dnpc2otel-spill-") as spill:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"SET temp_directory = '{spill}'")
            limit = memory_limit or DEFAULT_MEMORY_LIMIT
            try:
                con.execute("SET memory_limit = ?", [limit])
            except duckdb.Error:
                raise UserError(f"--memory-limit {memory_limit!r}: not a size such as 4GB or 500MB") from None
            # preserve_insertion_order stays on (DuckDB's default): line numbers are counted in file order
            con.execute("SET enable_progress_bar = false")  # ours is on stderr; DuckDB's would print to stdout
            try:
                yield con
            except duckdb.OutOfMemoryException as e:  # a step that cannot spill: say what to do, not a traceback
                raise UserError(f"DuckDB needed more than its memory limit of {limit} ({first_line(e)}); nothing "
                                "was written: replay again with a larger --memory-limit, "
                                f"e.g. {_larger(limit)}") from None
        finally:
            con.close()


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int | None:
    """Bytes of a size as DuckDB writes them ('4GB', '500 MiB', '1.5GB'), or None if it is not one."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    unit = m and _UNITS.get(m.group(2).upper())
    if not m or unit is None:
        return None
    return int(float(m.group(1)) * unit)


def _larger(limit: str) -> str:
    """A limit worth trying after `limit` ran out: 4x it, at least 4GB (an unparsed size: 4GB)."""
    size = parse_size(limit)
    if size is None:
        return "4GB"
    return f"{max(4, -(-size * 4 // 10**9))}GB"


def definitions_for(
    path: str | Path, converter_dirs: list[Path] | None = None, converter_files: list[Path] | None = None
) -> tuple[definitions.Catalog, rundir.RunDirSelection, runconfig.RunConfig | None]:
    """The definitions a replay of `path` uses, the runs it selects, and the dnpc2otel.toml it found."""
    catalog = definitions.load_catalog(converter_dirs, converter_files)
    selection = rundir.select(Path(path), catalog.system)
    local = runconfig.find(Path(path), selection.root)
    if local and local.converters:  # its definitions may declare another [system]: select again with them
        catalog = definitions.load_catalog([*(converter_dirs or []), *local.dirs],
                                           [*(converter_files or []), *local.files])
        selection = rundir.select(Path(path), catalog.system)
    return catalog, selection, local


def sources_for(
    path: str | Path, converter_dirs: list[Path] | None = None, converter_files: list[Path] | None = None
) -> tuple[definitions.Catalog, rundir.RunDirSelection, runconfig.RunConfig | None, list[rundir.SourceFile]]:
    """definitions_for, and the source files a replay of `path` reads (in the order it lists them)."""
    catalog, selection, local = definitions_for(path, converter_dirs, converter_files)
    files = rundir.source_files(selection, list(catalog.definitions), local.extra if local else None)
    if not files:
        raise UserError(f"{path}: no file any converter understands (parsl.log, parsl.jsonlog, monitoring.db, …)")
    return catalog, selection, local, files


def replay(
    path: str | Path,
    duckdb_path: str | Path | None = None,
    converter_dirs: list[Path] | None = None,
    converter_files: list[Path] | None = None,
    timezone: str | None = None,
    memory_limit: str | None = None,
    disagreement_ms: float = DEFAULT_THRESHOLD_MS,
    correct_skew: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    campaign: str | None = None,
    observed: list[Path] | None = None,
) -> ReplaySummary:
    """Convert the run(s) at `path` into the DuckDB file `duckdb_path` (default ./dnpc2otel.duckdb).

    Definitions: the built-in ones, $DNPC2OTEL_CONVERTERS, `converter_dirs`, `converter_files`, then those
    a dnpc2otel.toml beside or inside the run directory names (see sources.runconfig). `campaign`: the name of
    the campaign span above the runs (made anyway, named after the run_dir, when two runs or more are read).
    `observed`: the sources stage already done, as parts of `path`'s files (sources.parts), read instead."""
    catalog, selection, local, files = sources_for(path, converter_dirs, converter_files)
    target = Path(duckdb_path or DEFAULT_DUCKDB)
    summary = ReplaySummary(duckdb_path=target.resolve(), run_config=local.path if local else None,
                            run_dir=selection.root.resolve())

    def warn(msg: str) -> None:
        summary.warnings.append(msg)
        if on_warning:
            on_warning(msg)

    if selection.walk_warning():
        warn(selection.walk_warning())
    total = sum(_size(f.path) for f in files)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)

    root = selection.root.resolve()
    with workspace(memory_limit) as con:
        if timezone:
            clock.check_timezone(con, timezone)
        if observed is None:
            summary.sources = observe(con, catalog, files, root, on_bytes=advance, on_warning=warn)
        else:
            create_stage(con, OBSERVED)
            summary.sources, said = parts.read(con, observed)
            for msg in said:
                warn(msg)
            advance(total)
        if _count(con, f"{OBSERVED}.observations") == 0:
            why = "; ".join(summary.warnings) or "no line or row matched any converter rule"
            raise UserError(f"{path}: no usable observation in any source ({why})")
        reconcile(con, catalog, selection.runs, str(root), timezone, disagreement_ms, correct_skew,
                  selection.present)
        if _count(con, f"{RECONCILED}.spans") == 0:
            raise UserError(f"{path}: the sources name no run that was selected")
        for run_id, dirs in con.execute(  # a run id is made afresh for each run: two directories are copies
            f"SELECT run_id, run_dir FROM {RECONCILED}.runs WHERE contains(run_dir, ',') ORDER BY run_dir"
        ).fetchall():
            warn(f"run {run_id} is in several run directories ({dirs}; copies of one run?): read as one run, "
                 "its repeated events listed in table disagreements")
        summary.campaign = campaign_context.add_if_wanted(con, RECONCILED, campaign, root, catalog.system)
        store.write(con, target, str(root), catalog.views)
        _summarise(con, summary)
        summary.expected_parents = {t: catalog.types[t].parents for t in summary.unbound if t in catalog.types}
    summary.lines = store.summarise(target.resolve(), [r["trace_id"] for r in summary.runs], catalog.summaries,
                                    memory_limit or DEFAULT_MEMORY_LIMIT)
    return summary


def _summarise(con: duckdb.DuckDBPyConnection, summary: ReplaySummary) -> None:
    r = RECONCILED
    summary.contexts = dict(
        con.execute(f"SELECT context_type, count(*) FROM {r}.spans GROUP BY 1 ORDER BY 1").fetchall()
    )
    summary.spans = sum(summary.contexts.values())
    summary.links = _count(con, f"{r}.span_links")
    summary.events = _count(con, f"{r}.observations WHERE event IS NOT NULL AND time_unix_nano IS NOT NULL")
    summary.observations = _count(con, f"{r}.observations")
    summary.dangling_links = _count(con, f"{r}.dangling_links")
    summary.disagreements = {
        kind: (n, biggest)
        for kind, n, biggest in con.execute(
            f"SELECT kind, count(*), max(size_ms) FROM {r}.disagreements GROUP BY kind ORDER BY kind"
        ).fetchall()
    }
    summary.unbound = {
        ctype: (free, conflicting)
        for ctype, free, conflicting in con.execute(f"""
            SELECT s.context_type, count(*) FILTER (WHERE d.span_id IS NULL),
                   count(*) FILTER (WHERE d.span_id IS NOT NULL)
            FROM {r}.spans s
            LEFT JOIN (SELECT DISTINCT trace_id, span_id FROM {r}.disagreements WHERE kind = 'parent_conflict') d
              USING (trace_id, span_id)
            WHERE json_extract(s.attributes, '$."dnpc.orphan"')::BOOLEAN
            GROUP BY 1 ORDER BY 1""").fetchall()
    }
    summary.inferred = dict(con.execute(f"""
        SELECT context_type, count(*) FROM {r}.spans
        WHERE json_extract_string(attributes, '$."dnpc.binding"') = 'inferred' GROUP BY 1 ORDER BY 1""").fetchall())
    ccols = ["clock", "pairs", "lower_ms", "upper_ms", "skew_ms", "corrected"]
    summary.clocks = [
        dict(zip(ccols, row, strict=True))
        for row in con.execute(f"SELECT {', '.join(ccols)} FROM {r}.clocks ORDER BY trace_id, clock").fetchall()
    ]
    cols = ["run_id", "run_dir", "trace_id", "utc_offset_seconds", "offset_source", "spans"]
    summary.runs = [
        dict(zip(cols, row, strict=True))
        for row in con.execute(f"SELECT {', '.join(cols)} FROM {r}.runs ORDER BY run_dir, run_id").fetchall()
    ]


def _size(path: Path) -> int:
    """A file's size for the progress bar; one that vanished since it was listed is said when it is read."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
