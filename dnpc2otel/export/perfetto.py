"""Perfetto / Chrome trace export of the reconciled spans (`dnpc2otel export DB --perfetto FILE`).

Two encodings of one timeline (export/timeline.py):

- Chrome Trace Event JSON (`.json`): opens in ui.perfetto.dev and chrome://tracing. Times are microseconds
  from the earliest span, written as exact decimals of the nanosecond values (a float would round them and
  let a child poke out of its parent); the origin is in `otherData`.
- Perfetto's native TrackEvent protobuf (`.pftrace`, `.perfetto-trace`, `.pb`): the format Perfetto
  recommends for large traces (its UI holds about 2 GB; JSON near 1 GB crashes it). Written with a small
  hand-rolled encoder, streamed packet by packet, so the exporter needs no protobuf classes of Perfetto's.

Both are written to a temporary file beside the target and renamed into place: never a half-written trace.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import duckdb

from ..errors import UserError, first_line
from .timeline import Slice, Timeline, build

PROTO_SUFFIXES = (".pftrace", ".perfetto-trace", ".pb", ".proto")


def export_perfetto(database: Path, out: Path, trace_ids: list[str] | None = None,
                    fmt: str | None = None) -> dict[str, int]:
    """Write the database's spans to `out`; `fmt` is "json" or "proto" (default: from the suffix)."""
    fmt = fmt or ("proto" if out.suffix.lower() in PROTO_SUFFIXES else "json")
    if not Path(database).is_file():
        raise UserError(f"{database}: no such DuckDB file")
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.Error as e:
        raise UserError(f"{database}: not a DuckDB file this DuckDB can open ({first_line(e)})") from None
    with con:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'spans'").fetchone()[0]:
            raise UserError(f"{database}: a DuckDB file without a spans table (not written by dnpc2otel)")
        timeline = build(con, trace_ids)
    writer = _write_proto if fmt == "proto" else _write_json
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(timeline, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary name, not the result
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"processes": len(timeline.processes), "tracks": sum(len(p.tracks) for p in timeline.processes),
            "slices": len(timeline.slice_of), "flows": len(timeline.flows),
            "links_skipped": timeline.skipped_links}


# --- Chrome Trace Event JSON ------------------------------------------------------------------------------

def _us(ns: int) -> str:
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


def _write_json(t: Timeline, f: IO[bytes]) -> None:
    other = {"generator": "dnpc2otel", "time_origin_unix_nano": t.origin_ns}
    f.write(b'{"displayTimeUnit":"ms","otherData":' + json.dumps(other).encode() + b',"traceEvents":[\n')
    first = True

    def emit(text: str) -> None:
        nonlocal first
        f.write((text if first else ",\n" + text).encode())
        first = False

    for proc in t.processes:
        emit(json.dumps({"ph": "M", "name": "process_name", "pid": proc.pid, "tid": 0,
                         "args": {"name": proc.name}}))
        for track in proc.tracks:
            emit(json.dumps({"ph": "M", "name": "thread_name", "pid": proc.pid, "tid": track.tid,
                             "args": {"name": track.name}}))
            emit(json.dumps({"ph": "M", "name": "thread_sort_index", "pid": proc.pid, "tid": track.tid,
                             "args": {"sort_index": track.tid}}))
            for s in _depth_first(track.slices):
                head = json.dumps({"ph": "X", "name": s.name, "cat": s.context_type, "pid": proc.pid,
                                   "tid": track.tid, "args": s.args})
                emit(f'{head[:-1]},"ts":{_us(s.start - t.origin_ns)},"dur":{_us(s.end - s.start)}}}')
    for flow in t.flows:
        for ph, span, extra in (("s", flow.source, ""), ("f", flow.target, ',"bp":"e"')):
            pid, tid = t.track_of[span]
            ts = _us(t.slice_of[span].start - t.origin_ns)
            emit(f'{{"ph":"{ph}","id":{flow.id},"name":{json.dumps(flow.relation)},"cat":"flow",'
                 f'"pid":{pid},"tid":{tid},"ts":{ts}{extra}}}')
    f.write(b"\n]}\n")


def _depth_first(slices: list[Slice]) -> Iterator[Slice]:
    for s in slices:
        yield s
        yield from _depth_first(sorted(s.children, key=lambda c: (c.start, -c.end, c.span_id)))


# --- Perfetto TrackEvent protobuf ---------------------------------------------------------------------------
# Field numbers from perfetto/protos/perfetto/trace/{trace,trace_packet}.proto and track_event/*.proto.
SLICE_BEGIN, SLICE_END = 1, 2
SEQUENCE_ID = 1
SEQ_INCREMENTAL_STATE_CLEARED = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _uint(field: int, n: int) -> bytes:
    return _key(field, 0) + _varint(n)


def _fixed64(field: int, n: int) -> bytes:
    return _key(field, 1) + n.to_bytes(8, "little")


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _annotation(name: str, value: object) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        text = value if isinstance(value, str) else json.dumps(value)
        return _str(10, name) + _str(6, text)
    return _str(10, name) + _uint(4, value & (2**64 - 1))


def _packet(body: bytes, timestamp: int | None = None, flags: int = 0) -> bytes:
    head = (_uint(8, timestamp) if timestamp is not None else b"") + _uint(10, SEQUENCE_ID)
    if flags:
        head += _uint(13, flags)
    return _bytes(1, head + body)  # Trace.packet = 1


def _write_proto(t: Timeline, f: IO[bytes]) -> None:
    uuid = {}
    flags = SEQ_INCREMENTAL_STATE_CLEARED
    for proc in t.processes:
        puid = uuid[(proc.pid, 0)] = proc.pid << 20
        f.write(_packet(_bytes(60, _uint(1, puid) + _bytes(3, _uint(1, proc.pid) + _str(6, proc.name))),
                        flags=flags))
        flags = 0
        for track in proc.tracks:
            tuid = uuid[(proc.pid, track.tid)] = puid | track.tid
            thread = _uint(1, proc.pid) + _uint(2, proc.pid * 100_000 + track.tid) + _str(5, track.name)
            f.write(_packet(_bytes(60, _uint(1, tuid) + _uint(5, puid) + _bytes(4, thread))))
    outgoing: dict[str, list[int]] = {}
    incoming: dict[str, list[int]] = {}
    for flow in t.flows:
        outgoing.setdefault(flow.source, []).append(flow.id)
        incoming.setdefault(flow.target, []).append(flow.id)

    def track_events(proc_pid: int, tid: int, slices: list[Slice]) -> Iterator[tuple[int, int, bytes]]:
        track_uuid = _uint(11, uuid[(proc_pid, tid)])
        order = 0

        def walk(s: Slice) -> Iterator[tuple[int, int, bytes]]:
            nonlocal order
            body = _uint(9, SLICE_BEGIN) + track_uuid + _str(23, s.name) + _str(22, s.context_type)
            body += b"".join(_fixed64(47, i) for i in outgoing.get(s.span_id, ()))
            body += b"".join(_fixed64(48, i) for i in incoming.get(s.span_id, ()))
            body += b"".join(_bytes(4, _annotation(k, v)) for k, v in s.args.items() if v is not None)
            order += 1
            yield s.start, order, _bytes(11, body)
            for child in sorted(s.children, key=lambda c: (c.start, -c.end, c.span_id)):
                yield from walk(child)
            order += 1
            yield s.end, order, _bytes(11, _uint(9, SLICE_END) + track_uuid)

        for s in slices:
            yield from walk(s)

    streams = [track_events(p.pid, tr.tid, tr.slices) for p in t.processes for tr in p.tracks]
    # one time-ordered sequence; a track's own order (begin before its children, children's ends first)
    # decides between equal timestamps
    for ts, _, _, event in heapq.merge(*(_numbered(i, stream) for i, stream in enumerate(streams))):
        f.write(_packet(event, timestamp=ts))


def _numbered(i: int, stream: Iterator[tuple[int, int, bytes]]) -> Iterator[tuple[int, int, int, bytes]]:
    for ts, n, event in stream:
        yield ts, i, n, event
