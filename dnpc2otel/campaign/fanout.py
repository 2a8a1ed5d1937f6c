"""`replay CAMPAIGN --parsl-config FILE.py`: a campaign's runs converted as Parsl tasks, then assembled.

Runs are independent, so a campaign is embarrassingly parallel; Parsl (the optional extra `parsl`) is the
engine and FILE.py says where it runs, the way Parsl users describe their cluster: a Python file defining
`config`, a `parsl.config.Config`. Loading it executes it — the user's own file, never one of a run
directory. Parsl's own logs (its run_dir) go to a temporary directory, not ./runinfo.

Each run directory (runinfo/NNN) is one task: the single-process `replay` of that run into a DuckDB file
of its own (a part), in a work directory beside the target (so that it is on a file system the workers
see too; removed afterwards). A run's replay reads the files of its directory and those shared by the
run_dir (monitoring.db), whose rows of other runs it leaves out, exactly as `replay runinfo/NNN` does. The
parts are then assembled into one database by the code path of `replay` (the `reconciled` tables filled
from the parts, the campaign span added, `store.write`): the same tables, rows, ids and summary as the
single-process replay of the whole campaign.

A run whose source files hold more than `split_bytes` (--split-size, default 1GB) is read by several tasks
first: its files, in the order the replay reads them, cut into slices of about that size (a file is never cut:
a carried field looks back in the same file), each slice's sources stage written to a file (sources.parts);
the run's task then reconciles those instead of reading the files. The tables are the same.

Where a per-run split could differ from the whole, the campaign is converted as one task instead, with a
warning saying why:
- a run directory whose own replay fails (nothing usable in it), where the whole replay may just have
  nothing of it (then converted as one task, which fails or not as the plain replay would);
- a source file that belongs to no run directory and is not a shared file of every run (TaskVine's
  shared logs, which go to a run by their time window; a numbered directory that is not a run);
- a dnpc2otel.toml inside a run directory (its definitions would hold for that run only);
- one run in several run directories (copies: the whole replay reads them as one run).
Not detected: a run that only a shared file knows (monitoring.db rows of a run whose directory is gone):
the whole replay makes spans of it, the split leaves it out.
"""

from __future__ import annotations

import runpy
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import UserError, first_line
from ..sources import runconfig, rundir

DEFAULT_SPLIT_BYTES = 10**9


@dataclass(frozen=True)
class Options:
    """What every part's replay is given (the replay's own options, minus the output)."""

    converter_dirs: tuple[Path, ...] = ()
    converter_files: tuple[Path, ...] = ()
    timezone: str | None = None
    memory_limit: str | None = None
    disagreement_ms: float | None = None
    correct_skew: bool = False
    split_bytes: int | None = DEFAULT_SPLIT_BYTES  # a run with more bytes of sources is read by several tasks


def load_config(path: Path) -> Any:
    """The `config` a Parsl configuration file defines (executing the file: it is the user's own)."""
    try:
        from parsl.config import Config
    except ImportError:
        raise UserError("--parsl-config needs Parsl: pip install 'dnpc2otel[parsl]'") from None
    if not path.is_file():
        raise UserError(f"--parsl-config {path}: no such file")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as e:  # the user's code: any error it raises is theirs, said in one line
        raise UserError(f"--parsl-config {path}: {type(e).__name__}: {first_line(e)}") from None
    config = namespace.get("config")
    if not isinstance(config, Config):
        raise UserError(f"--parsl-config {path}: defines no `config` that is a parsl.config.Config")
    return config


def plan(path: Path, options: Options) -> tuple[Path, list[Path], str | None]:
    """(run_dir, the paths each task replays, why the campaign is one task, if it is)."""
    from ..pipeline import definitions_for

    catalog, selection, local = definitions_for(path, list(options.converter_dirs), list(options.converter_files))
    root = selection.root
    if selection.runs is not None or len(selection.present) < 2:
        return root, [path], None
    runs = set(selection.present)
    shared = set(catalog.system.shared_markers)
    for f in rundir.source_files(selection, list(catalog.definitions), local.extra if local else None):
        first = f.rel.split("/", 1)[0]
        if first not in runs and f.rel not in shared:
            return root, [path], f"{f.rel} belongs to no run directory"
    for r in selection.present:
        if (root / r / runconfig.NAME).is_file():
            return root, [path], f"{r}/{runconfig.NAME} holds for that run only"
    return root, [root / r for r in selection.present], None


def convert_part(path: str, out: str, options: Options, observed: list[str] | None = None):
    """One task: the single-process replay of `path` into the DuckDB file `out` (runs on a Parsl worker);
    `observed`: its sources stage, done by observe_part tasks."""
    from dnpc2otel.pipeline import replay
    from dnpc2otel.reconcile import DEFAULT_THRESHOLD_MS

    return replay(path, out, converter_dirs=list(options.converter_dirs),
                  converter_files=list(options.converter_files), timezone=options.timezone,
                  memory_limit=options.memory_limit,
                  disagreement_ms=DEFAULT_THRESHOLD_MS if options.disagreement_ms is None else options.disagreement_ms,
                  correct_skew=options.correct_skew,
                  observed=None if observed is None else [Path(p) for p in observed])


def observe_part(path: str, rels: list[str], out: str, options: Options) -> str:
    """One task: the sources stage of the files `rels` of the replay of `path`, written to `out`."""
    from dnpc2otel.pipeline import sources_for, workspace
    from dnpc2otel.sources import observe, parts

    catalog, selection, _, files = sources_for(path, list(options.converter_dirs), list(options.converter_files))
    wanted = set(rels)
    chosen = [f for f in files if f.rel in wanted]
    if len(chosen) != len(wanted):
        missing = sorted(wanted - {f.rel for f in chosen})
        raise UserError(f"{path}: {missing[0]} is no longer a source file of the run (it changed while read)")
    warnings: list[str] = []
    with workspace(options.memory_limit) as con:
        stats = observe(con, catalog, chosen, selection.root.resolve(), on_warning=warnings.append)
        parts.write(con, Path(out), stats, warnings)
    return out


def slices(path: Path, options: Options) -> list[list[str]]:
    """The files (relative to the run_dir) each observe_part task of `path` reads, or [] if it is one task."""
    from ..pipeline import sources_for
    from ..sources import parts

    if not options.split_bytes:
        return []
    catalog, _, _, files = sources_for(path, list(options.converter_dirs), list(options.converter_files))
    cut = parts.slices(files, list(catalog.definitions), options.split_bytes)
    return [[f.rel for f in s] for s in cut] if len(cut) > 1 else []


def replay_on_parsl(
    path: str | Path,
    config_file: Path,
    duckdb_path: str | Path | None,
    options: Options,
    campaign: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
):
    """Convert the runs at `path` as Parsl tasks on the configuration `config_file`, assemble one DuckDB file."""
    from ..pipeline import DEFAULT_DUCKDB
    from .assemble import assemble

    path = Path(path)
    if Path(config_file).resolve().is_relative_to(path.resolve()):  # a run directory is input, never code to run
        raise UserError(f"--parsl-config {config_file}: lies inside the run directory {path}; the configuration "
                        "must be your own file, outside the runs being read")
    config = load_config(config_file)
    import parsl

    target = Path(duckdb_path or DEFAULT_DUCKDB).resolve()
    root, paths, why = plan(path, options)
    warnings: list[str] = []
    if why:
        warnings.append(f"--parsl-config: the run_dir converted as one task ({why}: a per-run split could differ)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.parts-", dir=target.parent))
    logs = Path(tempfile.mkdtemp(prefix="dnpc2otel-parsl-"))
    config.run_dir = str(logs)
    try:
        dfk = parsl.load(config)
        try:
            app = parsl.python_app(convert_part, data_flow_kernel=dfk)
            observe_app = parsl.python_app(observe_part, data_flow_kernel=dfk)
            paths, summaries = convert_all(app, path, paths, work, options, warnings, on_progress, observe_app)
        finally:
            dfk.cleanup()
            parsl.clear()
        summary = assemble(path, [work / _part_name(p) for p in paths], list(summaries.values()), target, options,
                           campaign)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    summary.warnings[:0] = warnings
    if on_warning:
        for w in summary.warnings:
            on_warning(w)
    return summary


def _part_name(path: Path) -> str:
    return f"{path.name}.duckdb"


def convert_all(app, path: Path, paths: list[Path], work: Path, options: Options, warnings: list[str],
                on_progress: Callable[[int, int], None] | None = None,
                observe_app=None) -> tuple[list[Path], dict[Path, Any]]:
    """Run `app` (convert_part as a Parsl app: called, it returns a future) on each of `paths`, a large one's
    sources read first by `observe_app` (observe_part's); when the parts cannot be the whole replay's (a part's
    replay fails where the whole may not: a run directory with nothing usable; or two parts are one run),
    convert `path` as one task instead. (the paths, their summaries)"""
    run = partial(_run, app, observe_app=observe_app, work=work, options=options, on_progress=on_progress)
    try:
        summaries = run(paths)
    except _PartFailed as e:
        if len(paths) == 1:
            raise UserError(str(e)) from None
        warnings.append(f"--parsl-config: the run_dir converted as one task (the part {e})")
        return [path], run([path])
    runs = [r["trace_id"] for s in summaries.values() for r in s.runs]
    if len(paths) > 1 and len(runs) != len(set(runs)):
        warnings.append("--parsl-config: the run_dir converted as one task (a run is in several run "
                        "directories: the whole replay reads them as one run)")
        return [path], run([path])
    return paths, summaries


class _PartFailed(UserError):
    """A part's replay refused its input (not Parsl failing)."""


def _run(app, paths: list[Path], *, observe_app, work: Path, options: Options, on_progress) -> dict[Path, Any]:
    # every task that can start is submitted first: the runs read whole, and the slices of the large ones;
    # a large run's own task follows once its slices are read (no executor-specific dependency needed)
    cuts = {p: slices(p, options) if observe_app else [] for p in paths}
    observing = {p: [observe_app(str(p), rels, str(work / f"{p.name}.observed-{k}.duckdb"), options)
                     for k, rels in enumerate(cut)] for p, cut in cuts.items() if cut}
    futures = {p: app(str(p), str(work / _part_name(p)), options) for p in paths if p not in observing}
    for p, pending in observing.items():
        futures[p] = app(str(p), str(work / _part_name(p)), options, [_result(p, f) for f in pending])
    out = {}
    for done, p in enumerate(paths, 1):
        out[p] = _result(p, futures[p])
        if on_progress:
            on_progress(done, len(paths))
    return out


def _result(p: Path, future) -> Any:
    try:
        return future.result()
    except UserError as e:
        raise _PartFailed(f"{p.name}: {e}") from None
    except Exception as e:  # a worker lost, an executor that could not start: Parsl's error, in one line
        raise UserError(f"{p}: the Parsl task failed: {type(e).__name__}: {first_line(e)}") from None
