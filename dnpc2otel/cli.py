"""Command line: a thin layer over the API (`replay`, `export`, converter checks).

Errors a user can act on are printed as one line (`dnpc2otel: error: …`) with a non-zero exit; nothing
prints a traceback unless DNPC2OTEL_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import UserError, first_line
from .export.otlp import DEFAULT_BATCH_SPANS, OtlpConfig, export
from .export.otlp_config import PROTOCOLS
from .export.traces import AUTO_TASK_SPANS, DEFAULT_MODE, MODES
from .reconcile.disagreements import DEFAULT_THRESHOLD_MS

err = Console(stderr=True)
# stdout: nothing read as markup (paths and messages hold '['); lines print with soft_wrap, never cut to a width
out = Console(markup=False, highlight=False)


def _table(title: str | None, columns: list[str], rows: list[list[str]], header: bool = True) -> None:
    """A table on a terminal; in a pipe or a file, plain whole lines (never paths cut with "…" to fit)."""
    if not out.is_terminal:
        for r in rows:
            if header:
                print("\t".join(r))
            else:
                print(f"{r[0]}: {r[1]}")
        return
    t = Table(*columns, title=title, show_header=header)
    for r in rows:
        t.add_row(*r)
    out.print(t)

EXIT_USAGE = 2
EXIT_INTERNAL = 70


def _otlp_options(f):
    f = click.option("--otlp-endpoint", metavar="URL",
                     help="OTLP receiver, e.g. http://127.0.0.1:4318 (HTTP) or 127.0.0.1:4317 (gRPC). "
                          "Default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT.")(f)
    f = click.option("--otlp-protocol", type=click.Choice([*PROTOCOLS, "http"]),
                     help="Default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.")(f)
    f = click.option("--otlp-header", "otlp_headers", multiple=True, metavar="KEY=VALUE",
                     help="Extra request header (repeatable); adds to $OTEL_EXPORTER_OTLP_HEADERS.")(f)
    f = click.option("--otlp-max-request-bytes", type=int, default=None,
                     help="Split requests to stay under this size (default 3.5 MiB).")(f)
    f = click.option("--otlp-retry-seconds", type=float, default=60.0, show_default=True,
                     help="How long to keep retrying one request while the receiver is unreachable or busy.")(f)
    # these reach _otlp_config through the context (the commands' signatures stay as they are)
    for name, kind, text in (
        ("--otlp-deadline", float, "Give up after this many seconds in all (default: no overall limit)."),
        ("--otlp-batch-spans", int, "Spans per batch (request), the unit acknowledged and resumed (default 1000)."),
        ("--otlp-certificate", str, "CA bundle (PEM) verifying an https:// or TLS gRPC receiver; default: "
                                    "$OTEL_EXPORTER_OTLP_CERTIFICATE, else the system's CAs."),
        ("--otlp-client-certificate", str, "Mutual TLS: client certificate (PEM); default "
                                           "$OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE."),
        ("--otlp-client-key", str, "Mutual TLS: client private key (PEM); default $OTEL_EXPORTER_OTLP_CLIENT_KEY."),
    ):
        f = click.option(name, type=kind, default=None, expose_value=False, metavar="FILE" if kind is str else None,
                         callback=_to_meta, help=text)(f)
    return f


def _to_meta(ctx: click.Context, param: click.Parameter, value):
    ctx.meta[f"otlp.{param.name}"] = value
    return value


def _otlp_config(endpoint, protocol, headers, max_bytes, retry_s) -> OtlpConfig:
    hdrs = {}
    for h in headers:
        if "=" not in h:
            raise UserError(f"--otlp-header {h!r}: expected KEY=VALUE")
        k, v = h.split("=", 1)
        hdrs[k] = v
    kw = {"retry_for_s": retry_s}
    if max_bytes:
        kw["max_request_bytes"] = max_bytes
    meta = click.get_current_context().meta
    kw["deadline_s"] = meta.get("otlp.otlp_deadline")
    for name in ("certificate", "client_certificate", "client_key"):
        kw[name] = meta.get(f"otlp.otlp_{name}")
    return OtlpConfig.from_env(endpoint, protocol, hdrs, given_as="--otlp-endpoint", **kw)


def _batch_spans() -> int:
    return click.get_current_context().meta.get("otlp.otlp_batch_spans") or DEFAULT_BATCH_SPANS


def _export_report(result, config: OtlpConfig) -> None:
    for line in result.report(config):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.state_error:
        err.print(f"dnpc2otel: warning: {result.state_error}", highlight=False, markup=False, soft_wrap=True)


def _trace_per_option(f):
    return click.option("--trace-per", "trace_per", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True,
                        help="OTLP traces: one per run, one per task (each linked to its run's trace), or auto: "
                             f"per task for runs of more than {AUTO_TASK_SPANS:,} spans. The DuckDB file is "
                             "the same either way.")(f)


def _wants_export(endpoint: str | None) -> bool:
    return bool(endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dnpc2otel")
def cli() -> None:
    """Rebuild traces of Parsl workflow runs from their logs, after the fact."""


@cli.command()
@click.argument("rundir", type=click.Path(path_type=Path))
@click.option("--duckdb", "duckdb_path", type=click.Path(path_type=Path), default=None,
              help="DuckDB file to write (default ./dnpc2otel.duckdb); an existing one is updated in place.")
@_otlp_options
@click.option("--no-export", is_flag=True, help="Do not export even if OTEL_EXPORTER_OTLP_* variables are set.")
@click.option("--timezone", metavar="TZ",
              help="UTC offset or zone of naive local times (e.g. +02:00, America/Chicago); default: inferred.")
@click.option("--converters", "converter_dirs", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory of extra converter definitions (repeatable).")
@click.option("--converter", "converter_files", multiple=True, metavar="FILE",
              type=click.Path(path_type=Path, dir_okay=False),
              help="An extra converter definition (.toml, repeatable); a dnpc2otel.toml beside the run may name more.")
@click.option("--memory-limit", default=None, metavar="SIZE",
              help="DuckDB memory limit, e.g. 4GB; beyond it, work spills to a temporary directory. [default: 1GB]")
@click.option("--disagreement-ms", type=float, default=DEFAULT_THRESHOLD_MS, show_default=True,
              help="Report the same event recorded by two sources further apart than this.")
@click.option("--correct-skew", is_flag=True,
              help="Shift each host's times by its clock skew measured from causal event pairs (table clocks); "
                   "a clock whose bounds contradict each other is never shifted.")
@click.option("--campaign", metavar="NAME",
              help="Name of the campaign span above the runs (default, with two runs or more: the run_dir's "
                   "directory name, or its parent's for runinfo/).")
@click.option("--parsl-config", "parsl_config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="FILE.py",
              help="Convert each run as a Parsl task on the `config` this Python file defines (the file is "
                   "executed: give only your own), then assemble one DuckDB file. Needs the extra `parsl`.")
@click.option("--split-size", "split_size", default=None, metavar="SIZE",
              help="With --parsl-config: a run with more than SIZE of source files is read by several tasks of "
                   "about SIZE each (a file is never cut), then reconciled by one. [default: 1GB]")
@_trace_per_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def replay(rundir, duckdb_path, otlp_endpoint, otlp_protocol, otlp_headers, otlp_max_request_bytes,
           otlp_retry_seconds, no_export, timezone, converter_dirs, converter_files, memory_limit, disagreement_ms,
           correct_skew, campaign, parsl_config, split_size, trace_per, quiet) -> None:
    """Convert a Parsl run_dir (runinfo/) or one run (runinfo/000) to DuckDB, and export it over OTLP."""
    from .pipeline import parse_size
    from .pipeline import replay as run_replay

    if split_size is not None and parsl_config is None:
        raise UserError("--split-size: only with --parsl-config (a replay in one process reads every file itself)")
    if parsl_config is not None:
        from functools import partial

        from .campaign.fanout import DEFAULT_SPLIT_BYTES, Options, replay_on_parsl

        split_bytes = DEFAULT_SPLIT_BYTES if split_size is None else parse_size(split_size)
        if not split_bytes:
            raise UserError(f"--split-size {split_size!r}: not a size such as 1GB or 500MB")
        options = Options(tuple(converter_dirs), tuple(converter_files), timezone, memory_limit, disagreement_ms,
                          correct_skew, split_bytes)
        run_replay = partial(replay_on_parsl, config_file=parsl_config, options=options)  # type: ignore[assignment]

    config = None
    if not no_export and _wants_export(otlp_endpoint):
        config = _otlp_config(otlp_endpoint, otlp_protocol, otlp_headers, otlp_max_request_bytes, otlp_retry_seconds)
    with _progress(quiet, bytes_=parsl_config is None) as progress:  # on Parsl: runs converted, not bytes read
        task = progress.add_task("reading sources", total=None)
        progress_to = lambda done, total: progress.update(task, completed=done, total=total)  # noqa: E731
        if parsl_config is not None:
            progress.update(task, description="runs converted on Parsl")
            summary = run_replay(rundir, duckdb_path=duckdb_path, campaign=campaign, on_progress=progress_to)
        else:
            summary = run_replay(
                rundir,
                duckdb_path,
                converter_dirs=list(converter_dirs),
                converter_files=list(converter_files),
                timezone=timezone,
                memory_limit=memory_limit,
                disagreement_ms=disagreement_ms,
                correct_skew=correct_skew,
                on_progress=progress_to,
                campaign=campaign,
            )
    # warnings are shown once the replay succeeded; a fatal error carries its own cause in one line
    for msg in summary.warnings:
        err.print(f"dnpc2otel: warning: {msg}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"DuckDB: {summary.duckdb_path}", highlight=False, soft_wrap=True)
    if summary.run_dir and summary.run_dir not in (Path(rundir).resolve(), Path(rundir).resolve().parent):
        out.print(f"run_dir: {summary.run_dir} (inside {rundir})", highlight=False, soft_wrap=True)
    if config:
        trace_ids = [r["trace_id"] for r in summary.runs]
        if summary.campaign:  # the campaign's own small trace, beside the runs'
            from .campaign.context import trace_id as campaign_trace

            trace_ids.append(campaign_trace(summary.campaign))
        out.print(f"OTLP: sending to {config.describe()}", highlight=False, soft_wrap=True)
        with _progress(quiet, bytes_=False) as progress:
            task = progress.add_task("exporting spans", total=summary.spans)
            # a fresh replay sends everything; the state file lets `dnpc2otel export` resume a failed send
            result = export(summary.duckdb_path, config, trace_ids, state=True, restart=True,
                            batch_spans=_batch_spans(), trace_per=trace_per,
                            on_progress=lambda n, total: progress.update(task, completed=n, total=total))
        summary.exported_spans = result.spans
        _export_report(result, config)
    if not quiet:
        _print_summary(summary)


@cli.command(name="export")
@click.argument("database", type=click.Path(path_type=Path))
@_otlp_options
@click.option("--trace-id", "trace_ids", multiple=True, help="Export only this trace (repeatable).")
@click.option("--parquet", "parquet_dir", type=click.Path(path_type=Path, dir_okay=True), default=None,
              help="Write every table as DIR/<table>.parquet (then OTLP only if an endpoint is given).")
@click.option("--analysis", "with_analysis", is_flag=True, help="With --parquet: also DIR/analysis/<view>.parquet.")
@click.option("--perfetto", "perfetto_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a Perfetto / Chrome trace: FILE.json (Trace Event JSON) or FILE.pftrace (Perfetto's "
                   "protobuf, for large runs); then OTLP only if an endpoint is given.")
@click.option("--restart", is_flag=True, help="Send every span again, ignoring what the receiver acknowledged before "
                                              "(the state file DATABASE.export.json).")
@_trace_per_option
@click.option("-q", "--quiet", is_flag=True)
def export_cmd(database, otlp_endpoint, otlp_protocol, otlp_headers, otlp_max_request_bytes, otlp_retry_seconds,
               trace_ids, parquet_dir, with_analysis, perfetto_file, restart, trace_per, quiet) -> None:
    """(Re-)export an existing dnpc2otel DuckDB file over OTLP, as Parquet files or as a Perfetto trace, without
    reading the logs. OTLP resumes after the batches the receiver acknowledged before (DATABASE.export.json)."""
    if perfetto_file is not None:
        from .export.perfetto import export_perfetto

        got = export_perfetto(database, perfetto_file, list(trace_ids) or None)
        out.print(f"Perfetto: {got['slices']} slices on {got['tracks']} tracks of {got['processes']} processes, "
                  f"{got['flows']} flows, in {perfetto_file}", highlight=False, soft_wrap=True)
        if not _wants_export(otlp_endpoint) and parquet_dir is None:
            return
    if parquet_dir is not None:
        from .export.parquet import export_parquet

        files = export_parquet(database, parquet_dir, analysis=with_analysis)
        out.print(f"Parquet: {len(files)} files in {parquet_dir}", highlight=False, soft_wrap=True)
        if not _wants_export(otlp_endpoint):
            return
    config = _otlp_config(otlp_endpoint, otlp_protocol, otlp_headers, otlp_max_request_bytes, otlp_retry_seconds)
    out.print(f"OTLP: sending to {config.describe()}", highlight=False, soft_wrap=True)
    with _progress(quiet, bytes_=False) as progress:
        task = progress.add_task("exporting spans", total=None)
        result = export(database, config, list(trace_ids) or None, state=True, restart=restart,
                        batch_spans=_batch_spans(), trace_per=trace_per,
                        on_progress=lambda n, total: progress.update(task, completed=n, total=total))
    _export_report(result, config)


@cli.command()
@click.argument("database", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=Path("report.html"),
              show_default=True, help="The HTML file to write (self-contained: it loads nothing).")
@click.option("--run", "run", default=None, help="Run id or trace id (default: the run with the most spans).")
def report(database, output, run) -> None:
    """Write a self-contained HTML report of one run: where tasks ran, what they were doing over time, how
    long each part of their lives took, utilisation, the critical path, failures, resources, disagreements."""
    from .report import render

    got = render(database, output, run)
    more = f" ({got.other_runs} other runs in the database: --run picks one)" if got.other_runs else ""
    out.print(f"Report: {got.path} ({got.bytes / 1e6:.1f} MB, {got.plots} plots, {got.seconds:.1f} s) of run "
              f"{got.run_id}{more}", highlight=False, soft_wrap=True)


@cli.command()
@click.argument("database", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
@click.option("--json", "fmt", flag_value="json", help="Print a JSON array of row objects per statement.")
def sql(database, query, fmt) -> None:
    """Run SQL (QUERY, or statements on stdin) on a dnpc2otel DuckDB file, or on a run directory replayed into
    memory; the views of schema `analysis` are ready. Prints each result."""
    from .analysis import shell
    from .analysis.session import open_db

    if query is None:
        if sys.stdin.isatty():
            raise UserError("give a QUERY, or pipe SQL statements on stdin")
        query = sys.stdin.read()
    con = open_db(database)
    try:
        for result in shell.run(con, query):
            if fmt or not out.is_terminal or shell.width(result) > out.width:  # never cut a wide row to fit
                shell.write(result, fmt or "text")
            else:
                t = Table(*result.columns, caption=f"{len(result.rows)} rows")
                for r in shell.cells(result):
                    t.add_row(*r)
                out.print(t)
    finally:
        con.close()


@cli.command()
@click.option("--check", is_flag=True, help="Replay every rule's sample lines and report mismatches.")
@click.option("--converter", "files", multiple=True, metavar="FILE", type=click.Path(path_type=Path, dir_okay=False),
              help="An extra converter definition (.toml, repeatable).")
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path, file_okay=False))
def converters(check, files, dirs) -> None:
    """List converter definitions (built-in, DIRS and FILEs), or check their samples."""
    from .sources.definitions import load_all
    from .sources.samples import check_definition

    defs = load_all(list(dirs), list(files))
    if not check:
        _table(None, ["name", "formats", "rules/queries", "definition"],
               [[d.name, ", ".join(f.name for f in d.formats), str(len(d.rules) + len(d.queries)), str(d.path)]
                for d in defs])
        return
    failed = 0
    total = 0
    for d in defs:
        for r in check_definition(d):
            total += 1
            if not r.ok:
                failed += 1
                out.print(f"FAIL {r.definition}/{r.rule}: {r.detail}  [{r.message}]", highlight=False, soft_wrap=True)
    out.print(f"{total - failed} samples passed, {failed} failed", highlight=False)
    if failed:
        sys.exit(1)


def _progress(quiet: bool, bytes_: bool = True) -> Progress:
    cols = [TextColumn("{task.description}"), BarColumn()]
    cols += [DownloadColumn()] if bytes_ else [TextColumn("{task.completed}/{task.total}")]
    cols += [TimeRemainingColumn()]
    return Progress(*cols, console=err, transient=True, disable=quiet or not err.is_terminal)


def _print_summary(s) -> None:
    rows: list[list[str]] = []
    for r in s.runs:
        rows.append([f"run {r['run_dir'] or ''}".strip(),
                     f"{r['run_id'] or '(no run id)'}  trace {r['trace_id']}  {_offset(r['utc_offset_seconds'])} "
                     f"({r['offset_source']})"])
    rows.append(["contexts", ", ".join(f"{k} {v}" for k, v in s.contexts.items())])
    rows.append(["spans / links / events", f"{s.spans} / {s.links} / {s.events}"])
    rows.append(["observations", str(s.observations)])
    if s.run_config:
        rows.append(["run config (converters, files)", str(s.run_config)])
    read = [x for x in s.sources if not x.skipped]
    rows.append(["sources read", ", ".join(x.source for x in read) or "none"])
    damaged = [x for x in s.sources if x.damage]
    if damaged:  # said out loud: which file, what is wrong with it, what was done (table sources, warning)
        rows.append(["damaged sources", "; ".join(f"{x.source} ({x.damage}{', skipped' if x.skipped else ''})"
                                                  for x in damaged)])
    rows.append(["lines not understood", str(s.lines_not_understood) + _worst(
        [(x.source, x.not_understood) for x in s.sources])])
    records = sum(x.records for x in s.sources)
    rows.append(["records no rule uses", f"{s.records_unused} of {records}" + _worst(
        [(x.source, x.records - x.records_used) for x in s.sources]) + " (table sources)"])
    if s.disagreements:
        kinds = [f"{kind} {n}" + (f" (max {ms:.1f} ms)" if ms is not None else "")
                 for kind, (n, ms) in s.disagreements.items()]
        rows.append(["disagreements (table disagreements)", ", ".join(kinds)])
    if s.inferred:
        rows.append(["bound by inference (dnpc.binding = inferred)",
                     ", ".join(f"{k} {n}" for k, n in s.inferred.items())])
    if s.unbound:
        rows.append(["not bound to a parent (dnpc.orphan)", _unbound(s.unbound, s.expected_parents)])
    skewed = [c for c in s.clocks if c["skew_ms"]]
    # bounds that contradict each other give no estimate (and no correction): said, not hidden
    contradictory = [c for c in s.clocks if c["skew_ms"] is None and c["pairs"]]
    if s.clocks:
        rows.append(["clock skew vs the reference clock (table clocks)",
                     ", ".join([f"{c['clock']} {c['skew_ms']:+.3f} ms" + (" corrected" if c["corrected"] else "")
                                for c in skewed]
                               + [f"{c['clock']} contradictory bounds (lower {c['lower_ms']:+.3f} > upper "
                                  f"{c['upper_ms']:+.3f} ms): not estimated" for c in contradictory])
                     or f"none detected ({len(s.clocks)} host clocks checked)"])
    for label, value in s.lines.items():
        rows.append([label, value])
    if s.dangling_links:
        rows.append(["links to contexts no source describes", str(s.dangling_links)])
    if s.warnings:
        rows.append(["warnings", str(len(s.warnings))])
    if s.exported_spans is not None:
        rows.append(["exported spans", str(s.exported_spans)])
    _table("replay summary", ["", ""], rows, header=False)


def _unbound(unbound: dict[str, tuple[int, int]], parents: dict[str, tuple[str, ...]]) -> str:
    """'executor_task 31 (no source names their try)': what hangs under the run's root, and why."""
    parts = []
    for ctype, (free, conflicting) in unbound.items():
        wanted = " or ".join(parents.get(ctype, ())) or "parent"
        if free:
            parts.append(f"{ctype} {free} (no source names their {wanted})")
        if conflicting:
            parts.append(f"{ctype} {conflicting} (claimed by several of one type: parent_conflict)")
    return ", ".join(parts)


def _worst(counts: list[tuple[str, int]], most: int = 3) -> str:
    """' (a.log 12, b.log 3, …)': the sources with the largest counts."""
    top = sorted(((n, src) for src, n in counts if n), reverse=True)
    if not top:
        return ""
    more = f", {len(top) - most} more" if len(top) > most else ""
    return " (" + ", ".join(f"{src} {n}" for n, src in top[:most]) + more + ")"


def _offset(seconds: int | None) -> str:
    """'UTC+2h', 'UTC-5:30'; a zone name given by the user has no single offset (DST): 'zone'."""
    if seconds is None:
        return "zone"
    sign = "+" if seconds >= 0 else "-"
    h, m = divmod(abs(seconds) // 60, 60)
    return f"UTC{sign}{h}h" if not m else f"UTC{sign}{h}:{m:02d}"


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dnpc2otel", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("dnpc2otel: interrupted", highlight=False)
        return 130
    except click.ClickException as e:
        err.print(f"dnpc2otel: error: {e.format_message()}", highlight=False, markup=False, soft_wrap=True)
        return e.exit_code if e.exit_code else EXIT_USAGE
    except UserError as e:
        err.print(f"dnpc2otel: error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("dnpc2otel: interrupted", highlight=False)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into one line
        if os.environ.get("DNPC2OTEL_DEBUG"):
            raise
        err.print(f"dnpc2otel: internal error: {type(e).__name__}: {first_line(e)} "
                  "(DNPC2OTEL_DEBUG=1 shows a traceback)", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
