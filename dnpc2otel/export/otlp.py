"""OTLP exporter: spans, events and links of a dnpc2otel DuckDB file → an OTLP receiver (HTTP or gRPC, plain or TLS).

It knows spans and nothing of Parsl, and reads the export views of export/traces.py only (`export_spans`,
`export_events`, `export_links`: the trace each span is sent in, `trace_per`), on a read-only connection.

Streamed: spans, events and links are each sorted in one order, (trace_id, span_id), by DuckDB into a
temporary Parquet file (spilling beyond `MEMORY_LIMIT`), read back as three cursors and merged as they come,
so memory does not grow with the database (see `_Reader`). Each span is written as protobuf wire bytes
(otlp_wire.py), never as message objects.

Batches are deterministic: consecutive spans in that order, at most `batch_spans` of them and at most
`max_request_bytes` of protobuf (receivers reject larger messages: Jaeger's and the Collector's gRPC default
is 4 MiB). A batch is one request unless the receiver says it is too large; it is then split in halves, each
half a contiguous run of the order. With `state=True` (the CLI) every acknowledged request moves a cursor in
the state file beside the database (otlp_state.py), and the next export of the same database to the same
receiver resumes after it: nothing acknowledged is sent twice. `restart=True` sends everything again.

Failures (otlp_transport.py): an unreachable, restarting, slow or busy receiver is retried with exponential
backoff and jitter (a Retry-After is honoured) for `retry_for_s` per request and `deadline_s` in all; what will
not heal by waiting (400, 401, 403, 404, TLS verification) stops at once. Either way one ExportError line says
what was acknowledged, what is left and the command that resumes.

Resources: one per process and service. Each span names its process by `service.instance.id`; the process's
own span (marked `dnpc.process`, see reconcile/spans.py) holds the process's OpenTelemetry resource
attributes — `host.*`, `os.*`, `process.*`, `service.version` — which become the resource of every span of
that process, beside `service.name` and `service.namespace` (the `runs` table's, by the run's trace). The
spans keep all their attributes.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .. import __version__
from ..errors import UserError, first_line
from . import otlp_wire as wire
from .otlp_config import ExportError, OtlpConfig, require_listener
from .otlp_state import Progress, StateFile, database_identity, state_path
from .otlp_transport import Retryable, TooLarge, sender
from .traces import DEFAULT_MODE, create_views

__all__ = ["ExportError", "ExportResult", "OtlpConfig", "export"]

# span attributes of a process's span that describe the process: its OTLP resource (OTel semantic conventions)
RESOURCE_PREFIXES = ("host.", "os.", "process.")
RESOURCE_KEYS = ("service.version", "service.instance.id")
DEFAULT_BATCH_SPANS = 1000
MEMORY_LIMIT = "384MB"  # DuckDB's, for the sorts; it spills beyond
LARGE_LIMIT = "1GB"  # the last resort of a sort that does not fit MEMORY_LIMIT on one thread (10^6 tasks)
# how a sort that overflows is redone, in turn (a setting for the connection, then whether to sort from the
# view's rows written unsorted first): each thread's share of a sort is what overflows first (33 M events at
# 10^6 tasks), so one thread keeps to the limit at about twice the time; a sort over the task-mode links'
# joins (4 M moved spans) overflows even so, and fits once those rows are written unsorted and sorted from there
SORT_FALLBACKS = ((None, False), ("SET threads = 1", False), (None, True),
                  (f"SET memory_limit = '{LARGE_LIMIT}'", True))
FETCH_ROWS = 4096
MAX_BACKOFF_S = 10.0
# A span's events and links on the wire: a worker's span at 10^6 tasks holds 10^6 events (≈ 60 MB), more
# than any receiver takes in one request (Jaeger: 4 MiB), so it could never be delivered. As the SDKs do
# (OTEL_SPAN_EVENT_COUNT_LIMIT, OTEL_SPAN_LINK_COUNT_LIMIT, honoured when set), the first ones in time order
# are sent and the span's dropped_events_count / dropped_links_count says how many more; every one stays in
# the DuckDB file. The byte budget keeps a span of large events (tracebacks) under the request limit too.
MAX_SPAN_EVENTS = 10_000
MAX_SPAN_LINKS = 10_000
MAX_SPAN_PART_BYTES = 1 << 20


def span_limit(variable: str, default: int) -> int:
    """A positive integer from the environment variable, else the default."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{variable}={value!r}: not a positive number of events or links per span")
    return n


def resource_attributes(attrs: dict) -> dict:
    """The attributes of a process's span that belong on its resource."""
    return {k: v for k, v in attrs.items()
            if v is not None and (k in RESOURCE_KEYS or k.startswith(RESOURCE_PREFIXES))}


# ---------------------------------------------------------------------- reading, in (trace_id, span_id) order
SPANS_SQL = """
SELECT trace_id, span_id, parent_span_id, name, service_name, start_time_unix_nano, end_time_unix_nano,
       status_code, status_message, attributes::VARCHAR, run_trace_id
FROM SOURCE ORDER BY trace_id, span_id"""
EVENTS_SQL = """
SELECT trace_id, span_id, time_unix_nano, name, attributes::VARCHAR
FROM SOURCE ORDER BY trace_id, span_id, time_unix_nano, name, attributes::VARCHAR"""
LINKS_SQL = """
SELECT trace_id, span_id, linked_trace_id, linked_span_id, attributes::VARCHAR
FROM SOURCE ORDER BY trace_id, span_id, linked_span_id, attributes::VARCHAR"""
# the spans that are processes: their resource attributes, by (run trace, service.instance.id)
PROCESSES_SQL = """
SELECT run_trace_id, attributes::VARCHAR FROM export_spans
WHERE json_extract(attributes, '$."dnpc.process"') IS NOT NULL WHERE_AND"""


@dataclass(frozen=True)
class Selection:
    trace_ids: list[str] | None
    after: tuple[str, str] | None  # resume after this (trace_id, span_id)

    def where(self, resume: bool = True) -> tuple[str, list]:
        parts, params = [], []
        if self.trace_ids:
            marks = ", ".join("?" for _ in self.trace_ids)  # a run's trace, or one of the traces it is sent in
            parts.append(f"(run_trace_id IN ({marks}) OR trace_id IN ({marks}))")
            params += [*self.trace_ids, *self.trace_ids]
        if resume and self.after:
            parts.append("(trace_id > ? OR (trace_id = ? AND span_id > ?))")
            params += [self.after[0], self.after[0], self.after[1]]
        return " AND ".join(parts), params


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[tuple]:
    cur = con.execute(sql)
    while rows := cur.fetchmany(FETCH_ROWS):
        yield from rows


Group = tuple[tuple[str, str], list[bytes], int]  # (trace_id, span_id), encoded rows sent, rows dropped


def _grouped(rows: Iterator[tuple], encode: Callable[[tuple], bytes], limit: int,
             budget: int = MAX_SPAN_PART_BYTES) -> Iterator[Group]:
    """Consecutive rows of one (trace_id, span_id): the first `limit` of them encoded (within `budget` bytes,
    one at least), and how many more there were (only counted: memory stays bounded whatever a span holds)."""
    trace, span, group, size, dropped = None, None, [], 0, 0
    for r in rows:
        if r[1] != span or r[0] != trace:
            if group:
                yield (trace, span), group, dropped
            trace, span, group, size, dropped = r[0], r[1], [], 0, 0
        if dropped or len(group) >= limit or (group and size >= budget):
            dropped += 1
            continue
        encoded = encode(r)
        group.append(encoded)
        size += len(encoded)
    if group:
        yield (trace, span), group, dropped


def _attached(groups: Iterator[Group]) -> Callable[[tuple[str, str]], tuple[list[bytes], int]]:
    """A lookup that, called with ascending keys, returns each key's (rows, dropped) (a merge join with the
    spans)."""
    state: list = [next(groups, None)]

    def of(key: tuple[str, str]) -> tuple[list[bytes], int]:
        head = state[0]
        while head is not None and head[0] < key:  # rows of spans outside the selection
            head = next(groups, None)
        state[0] = head
        if head is not None and head[0] == key:
            state[0] = next(groups, None)
            return head[1], head[2]
        return [], 0

    return of


class _Reader:
    """A read-only connection with the export views, and three cursors that stream the sorted spans, events
    and links.

    Three ORDER BY results streamed side by side each keep their sorted data pinned in DuckDB's memory, which
    then grows with the database (it ran out of a 384 MB limit at 240k spans). So each stream is first sorted
    alone into a Parquet file in a temporary directory (COPY spills beyond the memory limit), and the three
    files are read back in their order, a row group at a time: memory stays flat in the database's size, for
    a temporary file about the size of the spans, events and links compressed."""

    def __init__(self, db_path: Path, trace_per: str):
        self.limits = (span_limit("OTEL_SPAN_EVENT_COUNT_LIMIT", MAX_SPAN_EVENTS),
                       span_limit("OTEL_SPAN_LINK_COUNT_LIMIT", MAX_SPAN_LINKS))
        self.tmp = tempfile.mkdtemp(prefix="dnpc2otel-export-")
        self.fallback = 0  # the first of SORT_FALLBACKS the next sort tries
        self.capped_spans = 0  # spans read whose events or links were more than the wire takes
        self.dropped = [0, 0]  # events, links of those not sent
        self.cursors: list[duckdb.DuckDBPyConnection] = []
        try:
            self.con = duckdb.connect(str(db_path), read_only=True)
            self.con.execute("SET enable_progress_bar = false")
            self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            self.con.execute(f"SET temp_directory = '{self.tmp}'")
            create_views(self.con, trace_per)
            self.cursors = [self.con.cursor() for _ in range(3)]
        except duckdb.Error as e:
            self.close()
            raise UserError(f"{db_path}: cannot open as a DuckDB database ({first_line(e)})") from None

    def _sorted(self, cursor: duckdb.DuckDBPyConnection, sql: str, sel: Selection, name: str) -> Iterator[tuple]:
        """Sort `sql` (reading SOURCE) over view export_<name> into a Parquet file; stream it back."""
        where, params = sel.where()
        view = f"export_{name} {f'WHERE {where}' if where else ''}"
        path, raw = Path(self.tmp) / f"{name}.parquet", Path(self.tmp) / f"{name}.raw.parquet"
        # the sorts are of the same size: each starts at the fallback the one before it needed
        for stage in range(self.fallback, len(SORT_FALLBACKS)):
            setting, staged = SORT_FALLBACKS[stage]
            if setting:  # kept on the connection for the sorts that follow
                self.con.execute(setting)
            try:
                if staged:
                    self.con.execute(f"COPY (SELECT * FROM {view}) TO '{raw}' (FORMAT parquet)", params)
                    unsorted = f"read_parquet('{raw}')"
                    self.con.execute(f"COPY ({sql.replace('SOURCE', unsorted)}) TO '{path}' (FORMAT parquet, "
                                     "COMPRESSION zstd)")
                    raw.unlink()
                else:
                    self.con.execute(f"COPY ({sql.replace('SOURCE', view)}) TO '{path}' (FORMAT parquet, "
                                     "COMPRESSION zstd)", params)
                self.fallback = stage
                break
            except duckdb.OutOfMemoryException as e:
                error = e
        else:
            raise UserError(f"sorting the {name} for export needed more than {LARGE_LIMIT} of memory even on one "
                            f"thread ({first_line(error)})") from None
        return _query(cursor, f"SELECT * FROM read_parquet('{path}')")

    def count(self, sel: Selection) -> tuple[int, int]:
        """(spans in the database, spans selected)."""
        where, params = sel.where(resume=False)
        con = self.con
        total = con.execute("SELECT count(*) FROM export_spans").fetchone()[0]
        if not where:
            return total, total
        return total, con.execute(f"SELECT count(*) FROM export_spans WHERE {where}", params).fetchone()[0]

    def spans(self, sel: Selection) -> Iterator[tuple[tuple[str, str], tuple[bytes, bytes], bytes, int]]:
        """(key, resource group, span bytes, events) per span, in key order."""
        where, params = sel.where(resume=False)
        processes: dict[tuple[str, str], dict] = {}
        for run_trace, attributes in self.con.execute(
                PROCESSES_SQL.replace("WHERE_AND", f"AND {where}" if where else ""), params).fetchall():
            attrs = json.loads(attributes)
            if attrs.get("service.instance.id"):
                processes[(run_trace, attrs["service.instance.id"])] = resource_attributes(attrs)
        namespaces = dict(self.con.execute(
            "SELECT trace_id, max(service_namespace) FROM runs GROUP BY trace_id").fetchall())
        spans_c, events_c, links_c = self.cursors
        event = wire.event
        ordered = [self._sorted(c, sql, sel, name) for c, sql, name in (
            (events_c, EVENTS_SQL, "events"), (links_c, LINKS_SQL, "links"), (spans_c, SPANS_SQL, "spans"))]
        events = _attached(_grouped(ordered[0], lambda r: event(r[2], r[3], r[4]), self.limits[0]))
        links = _attached(_grouped(ordered[1], lambda r: wire.link(r[2], r[3], r[4]), self.limits[1]))
        groups: dict[tuple, tuple[bytes, bytes]] = {}
        for trace_id, span_id, parent, name, service, start, end, code, message, attrs_text, run_trace in ordered[2]:
            key = (trace_id, span_id)
            attrs = json.loads(attrs_text) if attrs_text else {}
            evs, dropped_events = events(key)
            lks, dropped_links = links(key)
            if dropped_events or dropped_links:
                self.capped_spans += 1
                self.dropped[0] += dropped_events
                self.dropped[1] += dropped_links
            body = wire.span(trace_id, span_id, parent, name, start, end, attrs, code, message, evs, lks,
                             dropped_events, dropped_links)
            instance = attrs.get("service.instance.id")
            gkey = (service or "dnpc2otel", namespaces.get(run_trace), run_trace, instance)
            group = groups.get(gkey)
            if group is None:
                resource = processes.get((run_trace, instance), {"service.instance.id": instance} if instance else {})
                group = groups[gkey] = wire.resource_scope(
                    {"service.name": gkey[0], "service.namespace": gkey[1], **resource,
                     "telemetry.sdk.name": "dnpc2otel", "telemetry.sdk.version": __version__},
                    "dnpc2otel", __version__)
            yield key, group, body, len(evs)

    def close(self) -> None:
        for c in getattr(self, "cursors", []):
            c.close()
        if getattr(self, "con", None) is not None:
            self.con.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------- batches
@dataclass
class Batch:
    spans: list[tuple[tuple[str, str], tuple[bytes, bytes], bytes, int]]  # (key, group, span bytes, events)

    @property
    def last(self) -> tuple[str, str]:
        return self.spans[-1][0]

    @property
    def events(self) -> int:
        return sum(s[3] for s in self.spans)

    def body(self) -> bytes:
        by_group: dict[tuple[bytes, bytes], list[bytes]] = {}
        for _, group, body, _ in self.spans:
            by_group.setdefault(group, []).append(body)
        return wire.request(by_group.items())

    def halves(self) -> tuple[Batch, Batch] | None:
        if len(self.spans) < 2:
            return None
        half = len(self.spans) // 2
        return Batch(self.spans[:half]), Batch(self.spans[half:])


def batches(spans: Iterator, batch_spans: int, max_bytes: int) -> Iterator[Batch]:
    """Consecutive spans, at most `batch_spans` and (one oversized span excepted) `max_bytes` of request."""
    current: list = []
    size = 0
    groups: set = set()
    for s in spans:
        n = wire.framed_size(len(s[2]))
        extra = 0 if s[1] in groups else len(s[1][0]) + len(s[1][1]) + 16
        if current and (len(current) >= batch_spans or size + n + extra > max_bytes):
            yield Batch(current)
            current, size, groups = [], 0, set()
            extra = len(s[1][0]) + len(s[1][1]) + 16
        current.append(s)
        groups.add(s[1])
        size += n + extra
    if current:
        yield Batch(current)


# ---------------------------------------------------------------------- export
@dataclass
class ExportResult:
    spans: int = 0  # sent (and acknowledged) by this export
    events: int = 0
    requests: int = 0
    retries: int = 0
    splits: int = 0
    bytes: int = 0  # protobuf bytes acknowledged
    batches: int = 0
    total_spans: int = 0  # selected in the database
    skipped_spans: int = 0  # acknowledged by an earlier export (resumed)
    skipped_batches: int = 0
    rejected_spans: int = 0  # the receiver acknowledged but said it dropped these (OTLP partial success)
    capped_spans: int = 0  # spans sent with only their first events or links (the rest counted as dropped)
    dropped_events: int = 0
    dropped_links: int = 0
    limits: tuple[int, int] = (MAX_SPAN_EVENTS, MAX_SPAN_LINKS)
    seconds: float = 0.0
    resumed: str = "new"  # new, resumed, restart, database changed (otlp_state.StateFile.load)
    state_path: Path | None = None
    state_error: str | None = None

    @property
    def acknowledged(self) -> int:
        return self.skipped_spans + self.spans

    def report(self, cfg: OtlpConfig) -> list[str]:
        """The final report, a few lines."""
        lines = [f"OTLP: {self.spans:,} spans, {self.events:,} events in {self.batches:,} batches, "
                 f"{self.requests:,} requests ({self.retries} retries, {self.splits} splits), "
                 f"{self.bytes / 1e6:,.1f} MB to {cfg.endpoint} ({cfg.protocol}) in {self.seconds:.1f} s"]
        if self.skipped_spans:
            lines.append(f"OTLP: resumed: {self.skipped_batches:,} batches ({self.skipped_spans:,} spans) acknowledged "
                         "by an earlier export were not sent again (--restart sends everything)")
        if self.resumed == "database changed":
            lines.append("OTLP: the database changed since its last export to this receiver: everything was sent")
        if self.capped_spans:
            lines.append(f"OTLP: {self.capped_spans:,} spans had more than {self.limits[0]:,} events or "
                         f"{self.limits[1]:,} links (or 1 MiB of them): the first sent, {self.dropped_events:,} "
                         f"events and {self.dropped_links:,} links counted in dropped_events_count / "
                         "dropped_links_count; all are in the DuckDB file (OTEL_SPAN_EVENT_COUNT_LIMIT, "
                         "OTEL_SPAN_LINK_COUNT_LIMIT raise the limits)")
        if self.rejected_spans:
            lines.append(f"OTLP: warning: the receiver acknowledged but rejected {self.rejected_spans:,} spans")
        if self.state_path:
            lines.append(f"OTLP: {self.acknowledged:,} of {self.total_spans:,} spans acknowledged; "
                         f"state: {self.state_path}")
        return lines


def export(
    db_path: str | Path,
    config: OtlpConfig,
    trace_ids: list[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    resume_hint: str | None = None,
    trace_per: str = DEFAULT_MODE,
    *,
    state: bool = False,
    restart: bool = False,
    batch_spans: int = DEFAULT_BATCH_SPANS,
) -> ExportResult:
    """Send every span (or those of `trace_ids`) of the DuckDB file to the OTLP receiver, one trace per run
    or per task as `trace_per` says (export/traces.py).

    `state`: record what was acknowledged in DB.export.json and resume after it (`restart`: from the start).
    `on_progress(acknowledged, total)` after each request."""
    t0 = time.monotonic()
    db_path = Path(db_path)
    if not db_path.is_file():
        raise UserError(f"{db_path}: no such DuckDB file")
    if batch_spans < 1:
        raise UserError(f"batch size {batch_spans}: must be at least 1 span")
    hint = resume_hint or _resume_command(db_path, config, trace_ids, trace_per)
    if config.is_default:  # nobody chose this endpoint: when nothing listens there, say so now, not in a minute
        require_listener(config)
    reader = _Reader(db_path, trace_per)
    result = ExportResult()
    send = None
    states = None
    try:
        db_spans, result.total_spans = reader.count(Selection(trace_ids, None))
        progress = Progress(config.endpoint, config.protocol, sorted(trace_ids) if trace_ids else None, trace_per,
                            database_identity(db_path, db_spans))
        if state:
            states = StateFile(state_path(db_path))
            progress, result.resumed = states.load(progress, restart)
            result.state_path = states.path
            result.skipped_spans, result.skipped_batches = progress.spans, progress.batches
            states.save(progress)  # says from the start what this export is and that nothing is acknowledged yet
        if on_progress:
            on_progress(result.acknowledged, result.total_spans)
        if progress.complete:
            return result
        send = sender(config)
        sel = Selection(trace_ids, tuple(progress.cursor) if progress.cursor else None)

        def acknowledged(batch: Batch, nbytes: int, rejected: int) -> None:
            result.requests += 1
            result.spans += len(batch.spans)
            result.events += batch.events
            result.bytes += nbytes
            result.rejected_spans += rejected
            progress.cursor = list(batch.last)
            progress.requests += 1
            progress.spans += len(batch.spans)
            progress.events += batch.events
            if states:
                states.save(progress)
            if on_progress:
                on_progress(result.acknowledged, result.total_spans)

        try:
            for batch in batches(reader.spans(sel), batch_spans, config.max_request_bytes):
                _deliver(batch, send, config, result, acknowledged, t0)
                result.batches += 1
                progress.batches += 1
            progress.complete = True
            if states:
                states.save(progress)
        except ExportError as e:
            left = result.total_spans - result.acknowledged
            where = f"; state: {result.state_path}" if result.state_path else ""
            raise ExportError(
                f"{e} — {result.acknowledged:,} of {result.total_spans:,} spans acknowledged, {left:,} left{where}. "
                f"The DuckDB file is complete; resume with: {hint}") from None
    finally:
        result.capped_spans, (result.dropped_events, result.dropped_links) = reader.capped_spans, reader.dropped
        result.limits = reader.limits
        reader.close()
        if send is not None:
            send.close()
        result.seconds = time.monotonic() - t0
        if states:
            result.state_error = states.error
    return result


def _resume_command(db_path: Path, cfg: OtlpConfig, trace_ids: list[str] | None, trace_per: str) -> str:
    argv = ["dnpc2otel", "export", str(db_path), "--otlp-endpoint", cfg.endpoint, "--otlp-protocol", cfg.protocol]
    for tid in trace_ids or []:
        argv += ["--trace-id", tid]
    if trace_per != DEFAULT_MODE:
        argv += ["--trace-per", trace_per]
    for flag, value in (("--otlp-certificate", cfg.certificate), ("--otlp-client-key", cfg.client_key),
                        ("--otlp-client-certificate", cfg.client_certificate)):
        if value:
            argv += [flag, value]
    return shlex.join(argv)


def _deliver(batch: Batch, send, cfg: OtlpConfig, result: ExportResult,
             acknowledged: Callable[[Batch, int, int], None], t0: float) -> None:
    """Send one batch; split it in halves when the receiver says it is too large; retry while it is unavailable."""
    body = batch.body()
    attempt, first_failure = 0, None
    while True:
        try:
            rejected = send(body)
        except TooLarge as e:
            halves = batch.halves()
            if halves is None:
                raise ExportError(f"OTLP export failed: a single span is larger than the receiver accepts ({e})") \
                    from None
            result.splits += 1
            for half in halves:
                _deliver(half, send, cfg, result, acknowledged, t0)
            return
        except Retryable as e:
            now = time.monotonic()
            first_failure = first_failure or now
            waited = now - first_failure
            budget = cfg.retry_for_s - waited
            if cfg.deadline_s is not None:
                budget = min(budget, cfg.deadline_s - (now - t0))
            if budget <= 0:
                limit = (f"retried for {waited:.0f} s" if cfg.deadline_s is None or cfg.retry_for_s - waited <= 0
                         else f"deadline of {cfg.deadline_s:g} s reached")
                raise ExportError(f"OTLP export failed: {e} ({limit}; {cfg.why})") from None
            # jitter: receivers coming back are not hit by every client at once
            backoff = min(0.5 * 2 ** attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.0)  # noqa: S311
            pause = min(e.after if e.after is not None else backoff, budget)
            time.sleep(max(pause, 0.01))
            attempt += 1
            result.retries += 1
            continue
        acknowledged(batch, len(body), rejected)
        return
