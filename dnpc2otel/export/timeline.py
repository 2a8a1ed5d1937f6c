"""The spans laid out as a timeline viewer wants them: processes, tracks whose slices nest, and flows.

Trace viewers (Perfetto, chrome://tracing) draw one row per track and require the slices on a track to nest:
a slice that overlaps another without containing it is dropped. Spans are placed generically, from the
reconciled tables alone:

- a **process** is one service of one run (`spans.service_name` in a trace), as in OTLP;
- a span's **host** is its nearest parent in the same process, looking at the primary parent and the extra
  parents that `also_child_of` links name (a worker execution is hosted by its worker, not by the executor
  task of another process);
- a span with its hosted subtree forms one **unit** when the subtree nests (children disjoint, each nesting
  in turn); a span whose children overlap is placed alone and its children become units of their own;
- units are packed first-fit into **tracks** in start order: a worker with its executions takes one track
  (a worker slot), the DFK's tasks with their tries share as many task lanes as were ever concurrent;
- every span link is a **flow** from the linked span to the linking one, and so is every parent edge that
  crosses processes (try → executor task → worker execution), each with an id of its own.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from dataclasses import dataclass, field

import duckdb

EXTRA_PARENT = "also_child_of"


@dataclass
class Slice:
    span_id: str
    name: str
    context_type: str
    start: int
    end: int
    status: str
    args: dict[str, object]
    host: str | None = None
    children: list[Slice] = field(default_factory=list)


@dataclass
class Track:
    tid: int
    name: str
    slices: list[Slice] = field(default_factory=list)


@dataclass
class Process:
    pid: int
    name: str
    tracks: list[Track] = field(default_factory=list)


@dataclass
class Flow:
    id: int
    source: str      # span id the arrow leaves
    target: str      # span id it enters
    relation: str    # the link's dnpc.relation, or "parent"


@dataclass
class Timeline:
    processes: list[Process]
    flows: list[Flow]
    origin_ns: int                       # earliest start: JSON times are relative to it
    track_of: dict[str, tuple[int, int]]  # span id -> (pid, tid)
    slice_of: dict[str, Slice]
    skipped_links: int                   # links whose span is not in the database (dangling)


def build(con: duckdb.DuckDBPyConnection, trace_ids: list[str] | None = None) -> Timeline:
    where, params = ("WHERE trace_id IN (SELECT unnest(?))", [trace_ids]) if trace_ids else ("", [])
    rows = con.execute(f"""
        SELECT trace_id, span_id, parent_span_id, name, coalesce(service_name, context_type), context_type,
               start_time_unix_nano, end_time_unix_nano, status_code, status_message, attributes
        FROM spans {where} ORDER BY trace_id, start_time_unix_nano, span_id""", params).fetchall()
    links = con.execute(f"""
        SELECT span_id, linked_span_id, coalesce(attributes->>'dnpc.relation', 'link')
        FROM span_links {where} ORDER BY span_id, linked_span_id, 3""", params).fetchall()
    runs = dict(con.execute("SELECT trace_id, run_id FROM runs").fetchall()) if _has(con, "runs") else {}

    process_key: dict[str, tuple[str, str]] = {}
    slices: dict[str, Slice] = {}
    parent: dict[str, str | None] = {}
    for trace, sid, psid, name, service, ctype, start, end, status, message, attrs in rows:
        args: dict[str, object] = {"span_id": sid, "context_type": ctype, "status": status}
        if message:
            args["status_message"] = message
        args.update(json.loads(attrs) if isinstance(attrs, str) else (attrs or {}))
        slices[sid] = Slice(sid, name, ctype, start, max(start, end), status, args)
        process_key[sid] = (trace, service)
        parent[sid] = psid

    extra: dict[str, list[str]] = defaultdict(list)
    for sid, linked, relation in links:
        if relation == EXTRA_PARENT:
            extra[sid].append(linked)
    for sid, s in slices.items():
        for candidate in [parent[sid], *extra.get(sid, [])]:
            if candidate in slices and process_key[candidate] == process_key[sid]:
                s.host = candidate
                break
    for s in slices.values():
        if s.host:
            slices[s.host].children.append(s)

    by_process: dict[tuple[str, str], list[Slice]] = defaultdict(list)
    for sid, s in slices.items():
        if s.host is None:
            by_process[process_key[sid]].append(s)
    processes: list[Process] = []
    track_of: dict[str, tuple[int, int]] = {}
    for pid, key in enumerate(sorted(by_process), start=1):
        trace, service = key
        run = runs.get(trace)
        proc = Process(pid, f"{service} (run {run})" if run else service)
        units: list[Slice] = []
        for root in sorted(by_process[key], key=_order):
            units.extend(_units(root))
        _pack(proc, sorted(units, key=_order))
        for track in proc.tracks:
            for s in _walk(track.slices):
                track_of[s.span_id] = (pid, track.tid)
        processes.append(proc)

    flows: list[Flow] = []
    skipped = 0
    for sid, linked, relation in links:
        if relation == EXTRA_PARENT and slices.get(sid) is not None and slices[sid].host == linked:
            continue  # drawn as nesting on the same track
        if sid not in slices or linked not in slices:
            skipped += 1
            continue
        flows.append(Flow(0, linked, sid, relation))
    for sid, psid in parent.items():
        if psid in slices and slices[sid].host != psid and track_of[psid][0] != track_of[sid][0]:
            flows.append(Flow(0, psid, sid, "parent"))
    # ids numbered in a sorted order: deterministic, one per edge, and small enough for JSON readers in JS
    flows.sort(key=lambda f: (f.source, f.target, f.relation))
    for n, f in enumerate(flows, start=1):
        f.id = n
    origin = min((s.start for s in slices.values()), default=0)
    return Timeline(processes, flows, origin, track_of, slices, skipped)


def _units(span: Slice) -> list[Slice]:
    """The span with its subtree when that nests, else the span alone plus its children's units."""
    if _nests(span):
        return [span]
    span.children, children = [], span.children
    out = [span]
    for child in sorted(children, key=_order):
        child.host = None  # no longer drawn inside it: an extra parent becomes a flow
        out.extend(_units(child))
    return out


def _nests(span: Slice) -> bool:
    kids = sorted(span.children, key=_order)
    for a, b in zip(kids, kids[1:], strict=False):
        if b.start < a.end:
            return False
    return all(span.start <= k.start and k.end <= span.end and _nests(k) for k in kids)


def _pack(proc: Process, units: list[Slice]) -> None:
    """First fit in start order: a unit goes on the lowest-numbered track whose last unit has ended
    (two heaps, so a run with 10^5 concurrent tasks packs in n log n)."""
    busy: list[tuple[int, int]] = []  # (end of its last unit, track index)
    free: list[int] = []
    for unit in units:
        while busy and busy[0][0] <= unit.start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            i = heapq.heappop(free)
        else:
            i = len(proc.tracks)
            proc.tracks.append(Track(tid=i + 1, name=""))
        heapq.heappush(busy, (unit.end, i))
        proc.tracks[i].slices.append(unit)
    for track in proc.tracks:
        track.name = _unit_name(track.slices[0]) if len(track.slices) == 1 else \
            f"{'/'.join(sorted({s.context_type for s in track.slices}))} lane {track.tid}"


def _unit_name(s: Slice) -> str:
    ident = str(s.args.get("dnpc.context_id") or "")
    name = f"{s.context_type} {ident}".strip()
    return name if s.name in (s.context_type, ident) or ident in s.name else f"{name} ({s.name})"


def _walk(slices: list[Slice]):
    for s in slices:
        yield s
        yield from _walk(s.children)


def _order(s: Slice) -> tuple[int, int, str]:
    return (s.start, -s.end, s.span_id)


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0])
