"""Perfetto / Chrome trace export on every bundled real run: the JSON obeys the Trace Event format's rules
(slices on a track nest, every flow has one start and one end bound to slices, every pid/tid named), the
protobuf re-parses with the `perfetto` package's own protos, and every span and every span link is in both."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_runs

from dnpc2otel import replay
from dnpc2otel.export.perfetto import export_perfetto

RUNS = corpus_runs()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for run in RUNS:
        db = tmp_path_factory.mktemp("perfetto") / f"{run.parent.name}.duckdb"
        replay(run, db)
        out[run.parent.name] = db
    return out


def _spans_and_links(db: Path) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str, str]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        spans = {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT span_id, start_time_unix_nano, end_time_unix_nano FROM spans").fetchall()}
        links = con.execute("SELECT span_id, linked_span_id, attributes->>'dnpc.relation' FROM span_links").fetchall()
    return spans, links


def _check_nesting(slices: list[tuple[Decimal, Decimal, str]], where: str) -> None:
    """Slices (start, end, span id) on one track must be disjoint or contained."""
    stack: list[tuple[Decimal, str]] = []
    for start, end, sid in sorted(slices, key=lambda s: (s[0], -s[1], s[2])):
        while stack and stack[-1][0] <= start and not (stack[-1][0] == start == end):
            stack.pop()
        assert not stack or end <= stack[-1][0], f"{where}: {sid} overlaps {stack[-1][1]} without nesting"
        stack.append((end, sid))


@pytest.mark.parametrize("name", [r.parent.name for r in RUNS])
def test_chrome_json_follows_the_format(replayed, tmp_path, name):
    db = replayed[name]
    out = tmp_path / "trace.json"
    stats = export_perfetto(db, out)
    doc = json.loads(out.read_text(), parse_float=Decimal)
    events = doc["traceEvents"]
    spans, links = _spans_and_links(db)

    named_pids = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    named_tids = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["args"]["span_id"] for e in slices} == set(spans), "every span is one slice"
    assert len(slices) == len(spans) == stats["slices"]

    per_track: dict[tuple[int, int], list] = defaultdict(list)
    origin = Decimal(doc["otherData"]["time_origin_unix_nano"])
    where: dict[str, tuple[int, int]] = {}
    for e in slices:
        assert isinstance(e["name"], str) and e["dur"] >= 0 and e["ts"] >= 0
        assert e["pid"] in named_pids and (e["pid"], e["tid"]) in named_tids
        sid = e["args"]["span_id"]
        # exact times: the decimals are the nanosecond values, not rounded floats
        assert origin + e["ts"] * 1000 == spans[sid][0]
        assert origin + (e["ts"] + e["dur"]) * 1000 == max(spans[sid])
        per_track[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], sid))
        where[sid] = (e["pid"], e["tid"])
    for track, items in per_track.items():
        _check_nesting(items, f"{name} track {track}")

    flows = [e for e in events if e["ph"] in ("s", "f")]
    phases = defaultdict(list)
    for e in flows:
        phases[e["id"]].append(e)
        inside = [s for s in per_track[(e["pid"], e["tid"])] if s[0] <= e["ts"] <= s[1]]
        assert inside, f"flow {e['id']} {e['ph']} at {e['ts']} is bound to no slice"
    for fid, pair in phases.items():
        assert sorted(e["ph"] for e in pair) == ["f", "s"], f"flow {fid} has {pair}"
        assert next(e for e in pair if e["ph"] == "f")["bp"] == "e"
    assert len(phases) == stats["flows"]

    # every link is a flow from the linked span to the linking one, or drawn as nesting on one track
    ends = {(next(e for e in p if e["ph"] == "s")["ts"], next(e for e in p if e["ph"] == "f")["ts"], p[0]["name"])
            for p in phases.values()}
    starts = {sid: (e["ts"]) for e in slices for sid in [e["args"]["span_id"]]}
    for sid, linked, relation in links:
        as_flow = (starts[linked], starts[sid], relation) in ends
        nested = where[sid] == where[linked] and relation == "also_child_of"
        assert as_flow or nested, f"{name}: link {sid} -> {linked} ({relation}) is not in the trace"
    link_flows = sum(1 for p in phases.values() if p[0]["name"] != "parent")
    assert link_flows == sum(1 for _, _, r in links if r != "also_child_of") + sum(
        1 for s, t, r in links if r == "also_child_of" and where[s] != where[t])


@pytest.mark.parametrize("name", [r.parent.name for r in RUNS])
def test_protobuf_reparses_with_perfettos_protos(replayed, tmp_path, name):
    pb2 = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    db = replayed[name]
    out = tmp_path / "trace.pftrace"
    export_perfetto(db, out)
    export_perfetto(db, tmp_path / "trace.json")
    trace = pb2.Trace()
    trace.ParseFromString(out.read_bytes())
    spans, links = _spans_and_links(db)

    tracks = {p.track_descriptor.uuid for p in trace.packet if p.HasField("track_descriptor")}
    open_: dict[int, list[tuple[int, str]]] = defaultdict(list)
    starts, ends = Counter(), Counter()
    begun: list[str] = []
    last_ts = 0
    for p in trace.packet:
        if not p.HasField("track_event"):
            continue
        ev = p.track_event
        assert p.trusted_packet_sequence_id == 1 and p.timestamp >= last_ts, "one sequence, in time order"
        last_ts = p.timestamp
        assert ev.track_uuid in tracks, "every event's track is described"
        if ev.type == pb2.TrackEvent.TYPE_SLICE_BEGIN:
            sid = next(a.string_value for a in ev.debug_annotations if a.name == "span_id")
            assert p.timestamp == spans[sid][0]
            open_[ev.track_uuid].append((p.timestamp, sid))
            begun.append(sid)
            starts.update(ev.flow_ids)
            ends.update(ev.terminating_flow_ids)
        else:
            assert ev.type == pb2.TrackEvent.TYPE_SLICE_END
            _, sid = open_[ev.track_uuid].pop()  # an END closes the innermost open slice: slices nest
            assert p.timestamp == max(spans[sid])
    assert not any(open_.values()), "every slice ends"
    assert sorted(begun) == sorted(spans)
    assert set(starts) == set(ends)
    assert all(starts[i] == 1 and ends[i] == 1 for i in starts), "one start and one end per flow id"
    doc = json.loads((tmp_path / "trace.json").read_text())
    assert len(starts) == len({e["id"] for e in doc["traceEvents"] if e["ph"] == "s"}) >= len(
        [r for r in links if r[2] != "also_child_of"])


def test_cli_writes_both_and_refuses_a_missing_database(replayed, tmp_path):
    db = replayed["features-2026"]
    for target in (tmp_path / "t.json", tmp_path / "t.pftrace"):
        proc = subprocess.run([sys.executable, "-m", "dnpc2otel", "export", str(db), "--perfetto", str(target)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert target.stat().st_size > 0 and "perfetto" in proc.stdout.lower()
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel", "export", str(tmp_path / "nope.duckdb"),
                           "--perfetto", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()
