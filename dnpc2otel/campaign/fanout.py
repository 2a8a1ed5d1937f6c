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
from pathlib import Path
from typing import Any

from ..errors import UserError, first_line
from ..sources import runconfig, rundir


@dataclass(frozen=True)
class Options:
    """What every part's replay is given (the replay's own options, minus the output)."""

    converter_dirs: tuple[Path, ...] = ()
    converter_files: tuple[Path, ...] = ()
    timezone: str | None = None
    memory_limit: str | None = None
    disagreement_ms: float | None = None
    correct_skew: bool = False


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


def convert_part(path: str, out: str, options: Options):
    """One task: the single-process replay of `path` into the DuckDB file `out` (runs on a Parsl worker)."""
    from dnpc2otel.pipeline import replay
    from dnpc2otel.reconcile import DEFAULT_THRESHOLD_MS

    return replay(path, out, converter_dirs=list(options.converter_dirs),
                  converter_files=list(options.converter_files), timezone=options.timezone,
                  memory_limit=options.memory_limit,
                  disagreement_ms=DEFAULT_THRESHOLD_MS if options.disagreement_ms is None else options.disagreement_ms,
                  correct_skew=options.correct_skew)


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
            paths, summaries = convert_all(app, path, paths, work, options, warnings, on_progress)
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
                on_progress: Callable[[int, int], None] | None = None) -> tuple[list[Path], dict[Path, Any]]:
    """Run `app` (convert_part as a Parsl app: called, it returns a future) on each of `paths`; when the parts
    cannot be the whole replay's (a part's replay fails where the whole may not: a run directory with nothing
    usable; or two parts are one run), convert `path` as one task instead. (the paths, their summaries)"""
    try:
        summaries = _run(app, paths, work, options, on_progress)
    except _PartFailed as e:
        if len(paths) == 1:
            raise UserError(str(e)) from None
        warnings.append(f"--parsl-config: the run_dir converted as one task (the part {e})")
        return [path], _run(app, [path], work, options, on_progress)
    runs = [r["trace_id"] for s in summaries.values() for r in s.runs]
    if len(paths) > 1 and len(runs) != len(set(runs)):
        warnings.append("--parsl-config: the run_dir converted as one task (a run is in several run "
                        "directories: the whole replay reads them as one run)")
        return [path], _run(app, [path], work, options, on_progress)
    return paths, summaries


class _PartFailed(UserError):
    """A part's replay refused its input (not Parsl failing)."""


def _run(app, paths: list[Path], work: Path, options: Options, on_progress) -> dict[Path, Any]:
    futures = {p: app(str(p), str(work / _part_name(p)), options) for p in paths}
    out = {}
    for done, (p, fut) in enumerate(futures.items(), 1):
        try:
            out[p] = fut.result()
        except UserError as e:
            raise _PartFailed(f"{p.name}: {e}") from None
        except Exception as e:  # a worker lost, an executor that could not start: Parsl's error, in one line
            raise UserError(f"{p}: the Parsl task failed: {type(e).__name__}: {first_line(e)}") from None
        if on_progress:
            on_progress(done, len(paths))
    return out
