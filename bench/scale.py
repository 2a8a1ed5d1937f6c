"""Scale a real Parsl run directory: N tasks as K copies of a template run's tasks, or a campaign of R such runs.

    python bench/scale.py OUT [--tasks 20000] [--runs 1] [--template bench/template/runinfo]

writes OUT/runinfo (000, 001, … and one shared monitoring.db), consistent in every source:

- every id is renumbered per copy in every source: DFK task ids (also in dependency lists and task_logs
  paths), HTEX executor task ids (interchange, manager, worker logs, parsl.log's launch lines). Try ids
  count the tries of one task, so they stay; managers and blocks stay (one per run), worker logs grow;
- times move per copy by a whole number of seconds P longer than the template's task period, so copy c
  runs in [B0 + cP, B1 + cP]: each worker's executions stay sequential and every file stays in time order;
- a run's header and footer (DFK start, run id, manager start, cleanup) appear once: a line before a
  file's first id line is written once as it is, one after its last id line once after the last copy.
  Inside that window, a line without ids is one-off if the template's own replay turned it into an
  observation (a block status, a manager registration) and is written once; DEBUG chatter (no
  observation) repeats with every copy, so log volume per task stays the template's;
- a campaign (`--runs R`) is R such runs one after the other, each with its own run id, manager ids and
  directory (000 … R-1), sharing one monitoring.db, like a user's run_dir.

What changes is declared in the tables below: time stamps (TIME_FORMATS, EMBEDDED_TIMES) and ids (IDS) per
log format, each with a line of the template it applies to, and how each monitoring.db table scales
(DB_TABLES); nothing else in a line changes. Times inside messages move with their line (so a manager
record's 'start_time' moves with each copy too; no converter reads it). A line the template's replay ties
to a task, try or executor task but no id pattern matches stops the generator: the tables must grow first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "template" / "runinfo"
COPIED_CONTEXTS = ("task", "try", "executor_task", "worker_execution")  # one per task of each copy
RUN_GAP_S = 60  # between the runs of a campaign


@dataclass(frozen=True)
class Pattern:
    name: str
    where: str  # regex over the file's path in the run directory (000/…)
    regex: str
    sample: str  # a line of the template the regex applies to (an excerpt of an over-long one)
    origin: str  # file:line of it in the template


# Time stamps a line starts with (one per log format): `local` = naive local time to the second, `epoch` =
# the integer seconds of an epoch stamp, `frac` = the fraction that follows (kept as it is). Samples: a line of
# the template (or an excerpt of an over-long one) at origin = file:line.
TIME_FORMATS = (
    Pattern("parsl", r".", r"^(?P<epoch>\d{9,10})(?P<frac>\.\d+) (?P<local>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ",
            "1796176240.379509 2026-12-02 01:50:40 MainProcess-26635 MainThread-140201039387520 "
            "parsl.dataflow.dflow:123 __init__ INFO: Starting DataFlowKernel with config", "000/parsl.log:1"),
    Pattern("database_manager", r".", r"^(?P<local>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?P<frac>[.,]\d+) ",
            "2026-12-02 01:50:43.075 parsl.monitoring.db_manager:306 [INFO] [MainThread 139928891272064] "
            "Initializing Database Manager process", "000/database_manager.log:1"),
)

# Times inside a message (a manager record's heartbeat, a block status's timestamp) move with their line.
EMBEDDED_TIMES = (
    Pattern("epoch", r".", r"(?<![\w.])(?P<epoch>1[5-9]\d{8})(?=\.\d)",
            "_send_monitoring_info INFO: Sending message {'block_id': '0', 'start_time': 1796176245.6520653, "
            "'tasks': [1, 2]", "000/worker_pool/interchange.log:356"),
    Pattern("datetime", r".", r"datetime\.datetime\((?P<dt>\d{4}, \d{1,2}, \d{1,2}, \d{1,2}, \d{1,2}, \d{1,2})",
            "'parsl_version': '2026.10.26', 'time_began': datetime.datetime(2026, 12, 2, 1, 50, 40, 403714), "
            "'run_id': 'ac0d5278-7394-4b49-9d7f-748abe348df7'", "000/parsl.log:86"),
)

# Ids renumbered per copy. Group names: task / xtask = a DFK / HTEX executor task id, tasks / xtasks = a list of
# them (every number in the group), xcount = a running count of executor tasks, task4 = a task id padded to 4
# digits in a task_logs path, with bucket = its id // 10000 (Parsl's AUTO_LOGNAME).
_MGR = "000/worker_pool/block-0/0fc02410e35c"
IDS = (
    Pattern("dfk task", r"(^|/)parsl\.log$", r"\b[Tt]ask (?P<task>\d+)\b",
            "1796176245.171351 2026-12-02 01:50:45 MainProcess-26635 MainThread-140201039387520 "
            "parsl.dataflow.dflow:1053 submit INFO: Task 0 submitted for App work, not waiting on any dependency",
            "000/parsl.log:127"),
    Pattern("dfk launch", r"(^|/)parsl\.log$", r"with executor id (?P<xtask>\d+)",
            "1796176245.182244 2026-12-02 01:50:45 MainProcess-26635 Task-Launch_0-140200835520192 "
            "parsl.dataflow.dflow:734 launch_task INFO: Parsl task 0 try 0 launched on executor worker_pool with "
            "executor id 1", "000/parsl.log:363"),
    Pattern("task_logs path", r"(^|/)parsl\.log$|task_logs/",
            r"task_logs/(?P<bucket>\d{4})/task_(?P<task4>\d{4,})_",
            "1796176245.422053 2026-12-02 01:50:45 MainProcess-26635 Task-Launch_0-140200835520192 "
            "parsl.dataflow.dflow:1245 log_std_stream INFO: Standard out for task 108 will be redirected to "
            "/tmp/dnpc2otel-bench-template/runinfo/000/task_logs/0000/task_0108_shell.stdout", "000/parsl.log:2076"),
    Pattern("interchange task", r"/interchange\.log$", r"\btask (?P<xtask>\d+)\b",
            "1796176245.180095 2026-12-02 01:50:45 MainProcess-26860 MainThread-140360273881984 "
            "parsl.executors.high_throughput.interchange:345 process_task_incoming DEBUG: Putting task 1 onto "
            "pending_task_queue", "000/worker_pool/interchange.log:14"),
    Pattern("interchange dispatch", r"/interchange\.log$", r"Sent tasks: \[(?P<xtasks>[\d, ]+)\]",
            "1796176249.329165 2026-12-02 01:50:49 MainProcess-26860 MainThread-140360273881984 "
            "parsl.executors.high_throughput.interchange:561 process_tasks_to_send DEBUG: Sent tasks: [1, 2] to "
            "manager b'0fc02410e35c'", "000/worker_pool/interchange.log:354"),
    Pattern("interchange manager record", r"/interchange\.log$", r"'tasks': \[(?P<xtasks>[\d, ]+)\]",
            "_send_monitoring_info INFO: Sending message {'block_id': '0', 'start_time': 1796176245.6520653, "
            "'tasks': [1, 2]", "000/worker_pool/interchange.log:356"),
    Pattern("manager", r"/manager\.log$",
            r"Got executor tasks: \[(?P<xtasks>[\d, ]+)\], cumulative count of tasks: (?P<xcount>\d+)",
            "1796176249.329752 2026-12-02 01:50:49 MainProcess-27161 Interchange-Communicator-139863076538048 "
            "parsl.executors.high_throughput.process_worker_pool:393 interchange_communicator DEBUG: Got executor "
            "tasks: [1, 2], cumulative count of tasks: 2", f"{_MGR}/manager.log:41"),
    Pattern("worker", r"/worker_\d+\.log$", r"executor task (?P<xtask>\d+)\b",
            "1796176254.979999 2026-12-02 01:50:54 HTEX-Worker-1-27552 MainThread-139783534037888 "
            "parsl.executors.high_throughput.process_worker_pool:775 worker INFO: Received executor task 1",
            f"{_MGR}/worker_1.log:3"),
)
_GROUP_KINDS = {"task": "t", "tasks": "t", "task4": "4", "bucket": "b", "xtask": "x", "xtasks": "x", "xcount": "x"}


@dataclass(frozen=True)
class Table:
    rows: str  # copy: every row in every copy; run: once per run; window: by its time, like a log line (`inside`)
    columns: dict[str, str]  # column → task | tasks | time | begin | end | serial | scaled (others: text)
    inside: str = "copy"  # window rows inside the task window: copy | once


# monitoring.db: how each table's rows scale (the template's schema is copied as it is)
DB_TABLES = {
    "workflow": Table("run", {"time_began": "begin", "time_completed": "end", "tasks_failed_count": "scaled",
                              "tasks_completed_count": "scaled"}),
    "task": Table("copy", {"task_id": "task", "task_depends": "tasks", "task_time_invoked": "time",
                           "task_time_returned": "time"}),
    "try": Table("copy", {"task_id": "task", "task_try_time_launched": "time", "task_try_time_running": "time",
                          "task_try_time_returned": "time"}),
    "status": Table("copy", {"task_id": "task", "timestamp": "time"}),
    "resource": Table("copy", {"task_id": "task", "timestamp": "time"}),
    # a manager's status at each dispatch, like the interchange's records of it; the block's lifecycle once
    "node": Table("window", {"id": "serial", "timestamp": "time", "last_heartbeat": "time"}, inside="copy"),
    "block": Table("window", {"timestamp": "time"}, inside="once"),
}

_EPOCH_NAIVE = datetime(1970, 1, 1)
_LOCAL = "%Y-%m-%d %H:%M:%S"


class ScaleError(Exception):
    """The template is not one this generator can scale (said in one line)."""


def naive_seconds(text: str) -> int:
    return int((datetime.strptime(text, _LOCAL) - _EPOCH_NAIVE).total_seconds())


def _dt_seconds(args: str) -> int:
    y, mo, d, h, mi, s = (int(x) for x in args.split(","))
    return int((datetime(y, mo, d, h, mi, s) - _EPOCH_NAIVE).total_seconds())


# ---------------------------------------------------------------------------------------------- compiling
@dataclass
class Compiled:
    """A template line (or value) ready to render: `fmt` with {} per field, one kind letter and value each."""

    fmt: str
    kinds: str
    values: tuple
    t: float | None = None  # its time stamp (naive local seconds), None without one

    @property
    def has_ids(self) -> bool:
        return any(k in "t4bx" for k in self.kinds)


def _escape(s: str) -> str:
    return s.replace("{", "{{").replace("}", "}}")


class Compiler:
    """Turns template text into `Compiled` pieces: time stamps, embedded times, ids and run literals."""

    def __init__(self, literals: dict[str, str]):
        self.literals = literals  # template text → key of the run's replacement
        self.literal_re = (re.compile("|".join(re.escape(k) for k in sorted(literals, key=len, reverse=True)))
                           if literals else None)
        self.time_formats = [(p, re.compile(p.regex)) for p in TIME_FORMATS]
        self.embedded = [(p, re.compile(p.regex)) for p in EMBEDDED_TIMES]
        self.ids = [(p, re.compile(p.where), re.compile(p.regex)) for p in IDS]

    def time_format(self, lines: list[str]) -> re.Pattern | None:
        """The time format of a log file: the one most of its first lines start with."""
        best, hits = None, 0
        for _, rx in self.time_formats:
            n = sum(1 for line in lines[:200] if rx.match(line))
            if n > hits:
                best, hits = rx, n
        return best

    def ids_for(self, rel: str) -> list[re.Pattern]:
        return [rx for _, where, rx in self.ids if where.search(rel)]

    def line(self, text: str, stamp: re.Pattern | None, ids: list[re.Pattern], timed: bool = True) -> Compiled:
        spans: list[tuple[int, int, str, object]] = []
        t = None
        if stamp is not None and (m := stamp.match(text)):
            local = naive_seconds(m["local"])
            spans.append((m.start("local"), m.end("local"), "L", local))
            if m.groupdict().get("epoch"):
                spans.append((m.start("epoch"), m.end("epoch"), "E", int(m["epoch"])))
            t = local + float(m["frac"].replace(",", "."))
        if timed:
            for p, rx in self.embedded:
                for m in rx.finditer(text):
                    g = p.name
                    if g == "epoch":
                        spans.append((m.start("epoch"), m.end("epoch"), "E", int(m["epoch"])))
                    else:
                        spans.append((m.start("dt"), m.end("dt"), "D", _dt_seconds(m["dt"])))
        if self.literal_re is not None:
            for m in self.literal_re.finditer(text):
                spans.append((m.start(), m.end(), "R", self.literals[m[0]]))
        for rx in ids:
            for m in rx.finditer(text):
                for g, v in m.groupdict().items():
                    if v is None:
                        continue
                    kind = _GROUP_KINDS[g]
                    if g in ("tasks", "xtasks"):
                        base = m.start(g)
                        for n in re.finditer(r"\d+", v):
                            spans.append((base + n.start(), base + n.end(), kind, int(n[0])))
                    elif g == "bucket":
                        spans.append((m.start(g), m.end(g), kind, int(m["task4"])))
                    else:
                        spans.append((m.start(g), m.end(g), kind, int(v)))
        return _assemble(text, spans, t)


def _assemble(text: str, spans: list, t: float | None) -> Compiled:
    spans = sorted(set(spans), key=lambda s: (s[0], s[1]))
    parts, kinds, values, pos = [], [], [], 0
    for start, end, kind, value in spans:
        if start < pos:  # two fields over the same characters: which one wins would be undefined
            raise ScaleError(f"overlapping fields at {start} in: {text.rstrip()[:200]}")
        parts.append(_escape(text[pos:start]))
        parts.append("{}")
        kinds.append(kind)
        values.append(value)
        pos = end
    parts.append(_escape(text[pos:]))
    return Compiled("".join(parts), "".join(kinds), tuple(values), t)


# ---------------------------------------------------------------------------------------------- rendering
@dataclass
class Context:
    """What varies between copies and runs: the time shift, the id offsets, the run's own strings."""

    shift: int
    task_offset: int
    xtask_offset: int
    literals: dict[str, str]
    _local: dict[int, str] = field(default_factory=dict)
    _dt: dict[int, str] = field(default_factory=dict)

    def local(self, s: int) -> str:
        v = self._local.get(s)
        if v is None:
            v = self._local[s] = (_EPOCH_NAIVE + timedelta(seconds=s)).strftime(_LOCAL)
        return v

    def dt(self, s: int) -> str:
        v = self._dt.get(s)
        if v is None:
            d = _EPOCH_NAIVE + timedelta(seconds=s)
            v = self._dt[s] = f"{d.year}, {d.month}, {d.day}, {d.hour}, {d.minute}, {d.second}"
        return v

    def converters(self) -> dict[str, object]:
        s, to, xo, lit = self.shift, self.task_offset, self.xtask_offset, self.literals
        return {
            "E": lambda v: v + s,
            "L": lambda v: self.local(v + s),
            "D": lambda v: self.dt(v + s),
            "t": lambda v: v + to,
            "4": lambda v: f"{v + to:04d}",
            "b": lambda v: f"{(v + to) // 10000:04d}",
            "x": lambda v: v + xo,
            "R": lambda v: lit[v],
        }


def render_all(pieces: list[Compiled], ctx: Context) -> str:
    conv = ctx.converters()
    out = []
    append = out.append
    for p in pieces:
        if p.kinds:
            append(p.fmt.format(*[conv[k](v) for k, v in zip(p.kinds, p.values, strict=True)]))
        else:
            append(p.fmt)
    return "".join(out)


def render(piece: Compiled, ctx: Context) -> str:
    return render_all([piece], ctx)


# ---------------------------------------------------------------------------------------------- template
@dataclass
class LogFile:
    rel: str  # path in the run directory: 000/…
    path: Compiled  # the path itself (ids in a task_logs path, the manager id of its directory)
    header: list[Compiled]  # once, before the copies
    body: list[tuple[Compiled, bool]]  # (line, in every copy); one-off lines only with the first copy
    footer: list[Compiled]  # once, after the copies
    per_copy_file: bool = False  # the file itself belongs to one task (task_logs/…): one file per copy


@dataclass
class DbTable:
    name: str
    columns: list[str]
    kinds: list[str]  # per column: DB_TABLES' kind, else text
    header: list[list]  # rows (values, or Compiled text) once, before the copies
    body: list[list]  # rows of every copy (body_every_copy) or of the first one only
    footer: list[list]
    body_every_copy: bool = True


@dataclass
class Template:
    root: Path
    run_id: str
    managers: list[str]
    files: list[LogFile]
    db: dict[str, DbTable]
    db_schema: list[str]
    task_span: int  # task ids: a copy adds task_span to each
    xtask_span: int  # HTEX executor task ids: a copy adds xtask_span
    window: tuple[float, float]  # the task window [B0, B1]: first and last time of an id (naive local seconds)
    extent: tuple[float, float]  # first and last time of anything
    tasks: int

    @property
    def period(self) -> int:
        """Seconds between two copies: longer than the task window, whole seconds (stamps keep their fraction)."""
        return math.ceil(self.window[1] - self.window[0]) + 1


def _observed_lines(root: Path) -> dict[tuple[str, int], set[str]]:
    """(source, line) → context types the template's own replay made of that line."""
    import duckdb

    from dnpc2otel import replay

    with tempfile.TemporaryDirectory(prefix="dnpc2otel-scale-") as tmp:
        db = Path(tmp) / "template.duckdb"
        replay(root, db)
        con = duckdb.connect(str(db), read_only=True)
        try:
            rows = con.execute(
                "SELECT source, line, list(DISTINCT context_type) FROM observations WHERE line IS NOT NULL "
                "GROUP BY ALL").fetchall()
        finally:
            con.close()
    return {(s, int(n)): set(types) for s, n, types in rows}


def _read_db(path: Path) -> tuple[dict[str, tuple[list[str], list[tuple]]], list[str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema = [sql for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type = 'index', rowid")]
        tables = {}
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cur = db.execute(f'SELECT * FROM "{name}" ORDER BY rowid')
            tables[name] = ([d[0] for d in cur.description], cur.fetchall())
    finally:
        db.close()
    return tables, schema


def load_template(root: Path) -> Template:
    """Read a real run directory (one run, 000, with monitoring.db) and compile every line and row of it."""
    root = root.resolve()
    runs = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(runs) != 1 or not (root / "monitoring.db").is_file():
        raise ScaleError(f"{root}: a template is a run_dir with one run directory and its monitoring.db")
    tables, schema = _read_db(root / "monitoring.db")
    if not tables.get("workflow", ([], []))[1] or not tables.get("task", ([], []))[1]:
        raise ScaleError(f"{root}/monitoring.db: no workflow or task rows")
    wf = dict(zip(*(lambda c, r: (c, r[0]))(*tables["workflow"]), strict=True))
    recorded_root = str(Path(wf["rundir"]).parent)  # where the template was made: paths in its logs say so
    ncols, nrows = tables.get("node", ([], []))
    managers = sorted({row[ncols.index("uid")] for row in nrows}) if "uid" in ncols else []
    literals = {wf["run_id"]: "run_id", f"{recorded_root}/{runs[0]}": "run_dir", recorded_root: "root"}
    literals.update({m: f"manager:{m}" for m in managers})
    comp = Compiler(literals)

    raw: list[tuple[str, list[Compiled], bool]] = []
    for path in sorted(p for p in (root / runs[0]).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
        stamp = comp.time_format(lines)
        ids = comp.ids_for(rel)
        raw.append((rel, [comp.line(x, stamp, ids, timed=stamp is not None) for x in lines], stamp is not None))
    db_rows = _compile_db(comp, tables)

    times = [p.t for _, pieces, _ in raw for p in pieces if p.has_ids and p.t is not None]
    times += [v.t for name, (_, rows) in db_rows.items() if _spec(name).rows == "copy"
              for row in rows for v in row if isinstance(v, Compiled) and v.t is not None]
    if not times:
        raise ScaleError(f"{root}: no line or row names a task")
    window = (min(times), max(times))
    every = [p.t for _, pieces, _ in raw for p in pieces if p.t is not None]
    every += [v.t for _, rows in db_rows.values() for row in rows for v in row
              if isinstance(v, Compiled) and v.t is not None]

    observed = _observed_lines(root)
    files = [_split(rel, pieces, timed, window, observed, comp) for rel, pieces, timed in raw]
    pieces = [p for f in files for p in (*f.header, *(p for p, _ in f.body), *f.footer)]
    pieces += [v for _, rows in db_rows.values() for row in rows for v in row if isinstance(v, Compiled)]
    task_ids = [v for p in pieces for k, v in zip(p.kinds, p.values, strict=True) if k in "t4b"]
    xids = [v for p in pieces for k, v in zip(p.kinds, p.values, strict=True) if k == "x"]
    return Template(
        root=root, run_id=wf["run_id"], managers=managers, files=files,
        db={name: _split_table(name, cols, rows, window) for name, (cols, rows) in db_rows.items()},
        db_schema=schema, task_span=max(task_ids) - min(task_ids) + 1,
        xtask_span=(max(xids) - min(xids) + 1) if xids else 0, window=window, extent=(min(every), max(every)),
        tasks=len(tables["task"][1]),
    )


def _spec(table: str) -> Table:
    return DB_TABLES.get(table, Table("run", {}))


def _split(rel: str, pieces: list[Compiled], timed: bool, window: tuple[float, float],
           observed: dict[tuple[str, int], set[str]], comp: Compiler) -> LogFile:
    """Header / body / footer of one file, by the times of its records (a record: a stamped line and the
    unstamped lines after it) against the first and last time of a record with ids in it."""
    path = comp.line(rel, None, [rx for _, _, rx in comp.ids if "task_logs" in rx.pattern], timed=False)
    if path.has_ids or not timed:  # a task's own output, or a file without time stamps: copied as it is
        return LogFile(rel, path, pieces, [], [], per_copy_file=path.has_ids)
    records: list[tuple[int, list[Compiled]]] = []  # (first line number, lines)
    for n, p in enumerate(pieces, 1):
        if p.t is not None or not records:
            records.append((n, [p]))
        else:
            records[-1][1].append(p)
    id_times = [rec[0].t for _, rec in records if any(p.has_ids for p in rec) and rec[0].t is not None]
    b0, b1 = (min(id_times), max(id_times)) if id_times else window
    header, body, footer = [], [], []
    for n, rec in records:
        t = rec[0].t
        with_ids = any(p.has_ids for p in rec)
        types = observed.get((rel, n), set())
        if types & set(COPIED_CONTEXTS) and not with_ids:
            raise ScaleError(f"{rel}:{n}: the replay makes {', '.join(sorted(types))} of this line but no id "
                             f"pattern (scale.IDS) matches it: {rec[0].fmt.rstrip()[:200]}")
        if with_ids or (t is not None and b0 <= t <= b1):
            every_copy = with_ids or not types  # a one-off line (an observation, no id) only in the first copy
            body += [(p, every_copy) for p in rec]
        elif t is not None and t > b1:
            footer += rec
        else:
            header += rec
    return LogFile(rel, path, header, body, footer)


def _compile_db(comp: Compiler, tables: dict) -> dict[str, tuple[list[str], list[list]]]:
    """Each row as a list of values: constants, or `Compiled` text (times, ids, run literals)."""
    out = {}
    path_ids = [rx for _, _, rx in comp.ids if "task_logs" in rx.pattern]
    time_rx = re.compile(r"^(?P<local>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?P<frac>(?:\.\d+)?)")
    for name, (cols, rows) in tables.items():
        spec = _spec(name)
        crows = []
        for row in rows:
            crow = []
            for c, v in zip(cols, row, strict=True):
                kind = spec.columns.get(c, "text")
                if v is None or kind in ("serial", "scaled"):
                    crow.append(v)
                elif kind == "task":
                    crow.append(Compiled("{}", "t", (int(v),)))
                elif kind == "tasks":
                    crow.append(_assemble(str(v), [(m.start(), m.end(), "t", int(m[0]))
                                                   for m in re.finditer(r"\d+", str(v))], None))
                elif kind in ("time", "begin", "end") and isinstance(v, str) and (m := time_rx.match(v)):
                    secs = naive_seconds(m["local"])
                    crow.append(_assemble(v, [(0, m.end("local"), "L", secs)], secs + float(m["frac"] or 0)))
                elif isinstance(v, str):
                    p = comp.line(v, None, path_ids, timed=False)
                    crow.append(p if p.kinds else v)
                else:
                    crow.append(v)
            crows.append(crow)
        out[name] = (cols, crows)
    return out


def _split_table(name: str, cols: list[str], rows: list[list], window: tuple[float, float]) -> DbTable:
    spec = _spec(name)
    kinds = [spec.columns.get(c, "text") for c in cols]
    if spec.rows == "copy":
        return DbTable(name, cols, kinds, [], rows, [])
    if spec.rows == "run":
        return DbTable(name, cols, kinds, rows, [], [])
    at = kinds.index("time")  # window: by the row's (first) time against the task window

    def t(row: list) -> float:
        v = row[at]
        return v.t if isinstance(v, Compiled) and v.t is not None else window[0]

    return DbTable(name, cols, kinds, [r for r in rows if t(r) < window[0]],
                   [r for r in rows if window[0] <= t(r) <= window[1]], [r for r in rows if t(r) > window[1]],
                   body_every_copy=spec.inside == "copy")


# ---------------------------------------------------------------------------------------------- writing
@dataclass
class Plan:
    """Where each run and copy goes: R runs of K copies, copy c of run r `r * run_length + c * period` later."""

    template: Template
    root: Path  # the output run_dir
    copies: int
    runs: int

    def __post_init__(self) -> None:
        t = self.template
        self.period = t.period
        self.run_length = math.ceil(t.extent[1] - t.extent[0]) + (self.copies - 1) * self.period + RUN_GAP_S
        self.run_ids = [
            str(uuid.UUID(bytes=hashlib.sha256(f"dnpc2otel-bench/{t.run_id}/{self.copies}/{r}".encode()).digest()[:16],
                          version=4)) for r in range(self.runs)]  # the same arguments give the same trace ids

    def literals(self, r: int) -> dict[str, str]:
        run_id = self.run_ids[r]
        lit = {"run_id": run_id, "run_dir": str(self.root / f"{r:03d}"), "root": str(self.root)}
        for m in self.template.managers:  # each run its own manager ids, as a new process_worker_pool has
            lit[f"manager:{m}"] = hashlib.sha256(f"{m}/{run_id}".encode()).hexdigest()[:12]
        return lit

    def ctx(self, r: int, c: int, literals: dict[str, str]) -> Context:
        t = self.template
        return Context(r * self.run_length + c * self.period, c * t.task_span, c * t.xtask_span, literals)


def scale(template: Path, out: Path, tasks: int, runs: int = 1, log=None) -> dict:
    """Write out/runinfo: `runs` runs of ceil(tasks / template tasks) copies each. Returns what was made."""
    started = time.perf_counter()
    t = load_template(template)
    plan = Plan(t, (out / "runinfo").resolve(), max(1, math.ceil(tasks / t.tasks)), runs)
    if plan.root.exists():
        raise ScaleError(f"{plan.root} exists already")
    plan.root.mkdir(parents=True)
    files = lines = size = 0
    for r in range(runs):
        lit = plan.literals(r)
        first, last = plan.ctx(r, 0, lit), plan.ctx(r, plan.copies - 1, lit)
        for f in t.files:
            every = [p for p, each in f.body if each]
            for c in range(plan.copies) if f.per_copy_file else [0]:
                rel = render(f.path, plan.ctx(r, c, lit))
                target = plan.root / f"{r:03d}" / rel.split("/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                    chunks = [render_all(f.header, plan.ctx(r, c, lit) if f.per_copy_file else first)]
                    for k in range(plan.copies if f.body else 0):
                        chunks.append(render_all([p for p, _ in f.body] if k == 0 else every, plan.ctx(r, k, lit)))
                        if len(chunks) > 64:
                            lines += sum(x.count("\n") for x in chunks)
                            fh.write("".join(chunks))
                            chunks = []
                    chunks.append(render_all(f.footer, last))
                    lines += sum(x.count("\n") for x in chunks)
                    fh.write("".join(chunks))
                    size += fh.tell()
                files += 1
        if log:
            log(f"run {r + 1}/{runs}: logs written ({time.perf_counter() - started:.0f} s)")
    rows = _write_db(plan, plan.root / "monitoring.db")
    size += (plan.root / "monitoring.db").stat().st_size
    made = {
        "template": str(t.root), "template_run_id": t.run_id, "template_tasks": t.tasks, "copies": plan.copies,
        "runs": runs, "tasks_per_run": plan.copies * t.tasks, "tasks": plan.copies * t.tasks * runs,
        "period_s": plan.period, "files": files + 1, "lines": lines, "db_rows": rows, "bytes": size,
        "run_ids": plan.run_ids, "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "scale.json").write_text(json.dumps(made, indent=1) + "\n")
    return made


def _write_db(plan: Plan, path: Path) -> int:
    """One monitoring.db for every run, in the template's schema."""
    t = plan.template
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = OFF")  # a file being made: nothing to recover if it is cut short
    db.execute("PRAGMA synchronous = OFF")
    for sql in t.db_schema:
        db.execute(sql)
    serial: dict[str, int] = {}
    total = 0
    for r in range(plan.runs):
        lit = plan.literals(r)
        first, last = plan.ctx(r, 0, lit), plan.ctx(r, plan.copies - 1, lit)
        for tab in t.db.values():
            rows = _rows(tab, tab.header, first, last, plan.copies, serial)
            for c in range(plan.copies if tab.body else 0):
                if c == 0 or tab.body_every_copy:
                    rows += _rows(tab, tab.body, plan.ctx(r, c, lit), last, plan.copies, serial)
            rows += _rows(tab, tab.footer, last, last, plan.copies, serial)
            db.executemany(f'INSERT INTO "{tab.name}" VALUES ({", ".join("?" for _ in tab.columns)})', rows)
            total += len(rows)
    db.commit()
    db.close()
    return total


def _rows(tab: DbTable, rows: list[list], ctx: Context, last: Context, copies: int,
          serial: dict[str, int]) -> list[tuple]:
    conv, conv_end = ctx.converters(), last.converters()
    out = []
    for row in rows:
        vals = []
        for kind, v in zip(tab.kinds, row, strict=True):
            if kind == "serial":
                serial[tab.name] = serial.get(tab.name, 0) + 1
                vals.append(serial[tab.name])
            elif kind == "scaled" and v is not None:
                vals.append(v * copies)
            elif isinstance(v, Compiled):
                c = conv_end if kind == "end" else conv  # a run's end moves with its last copy
                s = v.fmt.format(*[c[k](x) for k, x in zip(v.kinds, v.values, strict=True)])
                vals.append(int(s) if kind == "task" else s)
            else:
                vals.append(v)
        out.append(tuple(vals))
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dnpc2otel
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="directory to create OUT/runinfo in")
    p.add_argument("--tasks", type=int, default=20_000, help="tasks per run (whole copies of the template)")
    p.add_argument("--runs", type=int, default=1, help="runs of the campaign (000 … R-1, one monitoring.db)")
    p.add_argument("--template", type=Path, default=TEMPLATE, help="a real run_dir with one run (default: %(default)s)")
    a = p.parse_args(argv)
    try:
        made = scale(a.template, a.out, a.tasks, a.runs, log=lambda m: print(m, file=sys.stderr))
    except ScaleError as e:
        print(f"scale: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in made.items() if k != "run_ids"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
