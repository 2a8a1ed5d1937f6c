"""Converter definitions: one TOML file per source format (see converters/ and the README).

A definition names its source (files matched by a path regular expression relative to the run_dir), how
records are read from it (`formats`), and how records become observations (`rules` for logs, `queries`
for SQLite). It may declare the context types it introduces, views and summary lines, and — once per
workflow system — the `[system]` facts the core must not assume (the run's root context type, the reference
clock, the service namespace, the files that mark a run). This module only loads and checks the
definitions; `observer` executes them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DefinitionError
from .templates import fields_of

KINDS = ("lines", "jsonl", "sqlite")
# columns every record row has already: a record field or path group may not take these names
RESERVED_FIELDS = ("source", "run_key", "line", "time_ns", "local_ns", "clock", "is_record", "text")


@dataclass(frozen=True)
class System:
    """What a workflow system's runs are; declared by its definitions (Parsl: converters/parsl.toml)."""

    name: str = "generic"
    label: str = "workflow"  # what users call it, in messages ("not a Parsl run directory")
    root_context: str = "workflow"  # every run has one context of this type, with id ''
    run_id_attribute: str = "dnpc.run_id"  # span attribute naming the run id
    reference_clock: str = "reference"  # the default clock of records; others' skew is measured against it
    service_namespace: str | None = None  # OTLP service.namespace
    run_markers: tuple[str, ...] = ()  # files in a run directory that make it one (parsl.log)
    shared_markers: tuple[str, ...] = ()  # files in a run_dir shared by its runs (monitoring.db)


@dataclass(frozen=True)
class ContextType:
    name: str
    default_name: str
    name_attributes: tuple[str, ...] = ()
    service: str = "dnpc2otel"
    parents: tuple[str, ...] = ()  # preferred parent types, best first
    covers_children: bool = False  # span widened to cover its children (workflow, executor)
    order: tuple[tuple[str, ...], ...] = ()  # events in the order they must happen (each step: alternatives)
    terminal: tuple[str, ...] = ()  # events that close the context; none seen: incomplete
    once: tuple[str, ...] = ()  # events a source records at most once per context (a try is launched once)
    unique: tuple[str, ...] = ()  # attributes with one value per context (a block has one job id)
    max_children: dict[str, int] = field(default_factory=dict)  # child type → most children (try: 1 executor task)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    files: re.Pattern[str]
    record: str | None = None  # lines: regular expression with named groups
    fields: dict[str, str] = field(default_factory=dict)  # jsonl: record field → JSON key
    time: str | None = None
    time_format: str = "epoch"  # epoch | epoch_us | strptime format (naive local time)
    local_time: str | None = None
    local_time_format: str | None = None
    clock: str | None = None  # None: the system's reference clock
    multiline: bool = False
    message_prefix: str | None = None  # lines: literal text just before the message (enables prefiltering)
    tables: tuple[str, ...] = ()  # sqlite: the tables the queries read

    @property
    def record_fields(self) -> tuple[str, ...]:
        if self.kind == "lines" and self.record:
            return tuple(re.compile(self.record).groupindex)
        if self.kind == "jsonl":
            return ("message", *self.fields)
        return ()


@dataclass(frozen=True)
class Emit:
    context: str  # "type:{id template}"
    event: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    event_attributes: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    link: str | None = None
    relation: str | None = None
    alias: str | None = None
    where: str | None = None
    each: dict[str, str] = field(default_factory=dict)
    bounds: bool = True

    @property
    def context_type(self) -> str:
        return self.context.split(":", 1)[0]


@dataclass(frozen=True)
class Carry:
    source_rules: tuple[str, ...]  # the rules whose lines lend their fields
    key: tuple[str, ...]
    fields: tuple[str, ...]
    direction: str = "previous"


@dataclass(frozen=True)
class Rule:
    name: str
    match: str
    groups: tuple[str, ...]
    emit: tuple[Emit, ...]
    input_field: str = "message"  # the record field the pattern is matched against
    logger: str | None = None
    derive: dict[str, str] = field(default_factory=dict)
    carry: Carry | None = None
    samples: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Causality:
    """`after` cannot happen before `before`; their contexts are the same, or one is an ancestor of the other."""

    before_type: str
    before_event: str
    after_type: str
    after_event: str


@dataclass(frozen=True)
class Definition:
    name: str
    description: str
    service: str
    priority: int
    path: Path
    formats: tuple[Format, ...]
    rules: tuple[Rule, ...] = ()
    queries: tuple[Query, ...] = ()
    contexts: dict[str, ContextType] = field(default_factory=dict)
    samples: tuple[dict[str, Any], ...] = ()  # SQLite sources: tiny databases and what each query yields
    causality: tuple[Causality, ...] = ()  # event pairs whose order is physical: used to measure clock skew
    views: tuple[tuple[str, str], ...] = ()  # (name, SQL): views this source adds to the output database
    summaries: tuple[tuple[str, str], ...] = ()  # (label, SQL giving one value): lines of the replay summary
    system: System | None = None

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Named groups of the formats' file patterns (but the run directory): fields of every record."""
        return tuple(sorted({g for f in self.formats for g in f.files.groupindex} - {"rundir"}))

    @property
    def record_fields(self) -> tuple[str, ...]:
        """Fields of the records of any of the formats, `message` first: one column each in a record row."""
        names = {n for f in self.formats for n in f.record_fields}
        return ("message", *sorted(names - {"message"}))


@dataclass(frozen=True)
class Catalog:
    """The definitions of one replay, and what they declare together."""

    definitions: tuple[Definition, ...]
    system: System
    types: dict[str, ContextType]

    @property
    def causality(self) -> list[Causality]:
        return [c for d in self.definitions for c in d.causality]

    @property
    def views(self) -> list[tuple[str, str]]:
        return [v for d in self.definitions for v in d.views]

    @property
    def summaries(self) -> list[tuple[str, str]]:
        return [s for d in self.definitions for s in d.summaries]


def builtin_dir() -> Path:
    try:
        return Path(str(resources.files("dnpc2otel.converters")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parent.parent / "converters"


def load_all(extra_dirs: list[Path] | None = None) -> list[Definition]:
    """The built-in definitions, then those in `extra_dirs` and $DNPC2OTEL_CONVERTERS (":"-separated).

    A user definition with the name of a built-in one replaces it.
    """
    dirs = [builtin_dir()]
    env = os.environ.get("DNPC2OTEL_CONVERTERS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += list(extra_dirs or [])
    by_name: dict[str, Definition] = {}
    for d in dirs:
        if not d.is_dir():
            raise DefinitionError(f"converter directory {d} does not exist")
        for path in sorted(d.glob("*.toml")):
            definition = load(path)
            by_name[definition.name] = definition
    return list(by_name.values())


def load_catalog(extra_dirs: list[Path] | None = None) -> Catalog:
    definitions = load_all(extra_dirs)
    systems = [d for d in definitions if d.system]
    if len(systems) > 1:
        names = ", ".join(str(d.path) for d in systems)
        raise DefinitionError(f"several definitions declare a [system]: {names}; keep one")
    system = systems[0].system if systems and systems[0].system else System()
    return Catalog(tuple(definitions), system, context_types(definitions))


def context_types(definitions: list[Definition]) -> dict[str, ContextType]:
    types: dict[str, ContextType] = {}
    for d in definitions:
        for name, ct in d.contexts.items():
            if name in types and types[name] != ct:
                raise DefinitionError(f"{d.path}: context type {name!r} is declared differently elsewhere")
            types[name] = ct
    return types


def load(path: Path) -> Definition:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DefinitionError(f"{path}: cannot read converter definition: {e}") from None
    try:
        return _build(path, raw)
    except (KeyError, TypeError, ValueError, re.error) as e:
        raise DefinitionError(f"{path}: invalid converter definition: {type(e).__name__}: {e}") from None


def _build(path: Path, raw: dict[str, Any]) -> Definition:
    name = raw["name"]
    formats = tuple(_format(f) for f in raw.get("formats", []))
    if not formats and (raw.get("rules") or raw.get("queries")):
        raise ValueError("rules and queries need at least one [[formats]] entry")
    # the named groups of a format's file pattern are fields of all its records (executor label, block …)
    path_fields = {g for f in formats for g in f.files.groupindex}
    record_fields = {n for f in formats for n in f.record_fields}
    both = path_fields & record_fields
    if both:
        raise ValueError(f"fields {sorted(both)} are both path groups and record fields; rename one")
    reserved = (path_fields | record_fields) & set(RESERVED_FIELDS)
    if reserved:
        raise ValueError(f"fields {sorted(reserved)} are reserved names of record rows; rename them")
    rules = tuple(_rule(r, path_fields | record_fields) for r in raw.get("rules", []))
    rule_names = {r.name for r in rules}
    for r in rules:
        unknown = set(r.carry.source_rules) - rule_names if r.carry else set()
        if unknown:
            raise ValueError(f"rule {r.name}: carry from unknown rules {sorted(unknown)}")
    queries = tuple(
        Query(q["name"], q["sql"], tuple(q.get("alternatives", []))) for q in raw.get("queries", [])
    )
    contexts = {
        k: ContextType(
            name=k,
            default_name=v.get("default_name", k),
            name_attributes=tuple(v.get("name", [])),
            service=v.get("service", raw.get("service", "dnpc2otel")),
            parents=tuple(v.get("parents", [])),
            covers_children=bool(v.get("covers_children", False)),
            order=tuple(tuple([step] if isinstance(step, str) else step) for step in v.get("order", [])),
            terminal=tuple(v.get("terminal", [])),
            once=tuple(v.get("once", [])),
            unique=tuple(v.get("unique", [])),
            max_children=dict(v.get("max_children", {})),
        )
        for k, v in raw.get("contexts", {}).items()
    }
    return Definition(
        name=name,
        description=raw.get("description", ""),
        service=raw.get("service", name),
        priority=int(raw.get("priority", 50)),
        path=path,
        formats=formats,
        rules=rules,
        queries=queries,
        contexts=contexts,
        samples=tuple(raw.get("samples", [])),
        causality=tuple(_causality(c) for c in raw.get("causality", [])),
        views=tuple((v["name"], v["sql"]) for v in raw.get("views", [])),
        summaries=tuple((v["label"], v["sql"]) for v in raw.get("summary", [])),
        system=_system(name, raw["system"]) if "system" in raw else None,
    )


def _system(name: str, s: dict[str, Any]) -> System:
    return System(
        name=name,
        label=s.get("label", name),
        root_context=s.get("root_context", "workflow"),
        run_id_attribute=s.get("run_id_attribute", "dnpc.run_id"),
        reference_clock=s.get("reference_clock", "reference"),
        service_namespace=s.get("service_namespace"),
        run_markers=tuple(s.get("run_markers", [])),
        shared_markers=tuple(s.get("shared_markers", [])),
    )


def _causality(c: dict[str, Any]) -> Causality:
    before_type, before_event = c["before"].split(".", 1)
    after_type, after_event = c["after"].split(".", 1)
    return Causality(before_type, before_event, after_type, after_event)


def _format(f: dict[str, Any]) -> Format:
    kind = f["kind"]
    if kind not in KINDS:
        raise ValueError(f"format {f.get('name')}: kind must be one of {KINDS}")
    record = f.get("record")
    if kind == "lines":
        if not record:
            raise ValueError(f"format {f['name']}: a lines format needs a `record` pattern")
        groups = set(re.compile(record).groupindex)
        if "message" not in groups:
            raise ValueError(f"format {f['name']}: the record pattern needs a (?P<message>…) group")
    return Format(
        name=f["name"],
        kind=kind,
        files=re.compile(f["files"]),
        record=record,
        fields=dict(f.get("fields", {})),
        time=f.get("time"),
        time_format=f.get("time_format", "epoch"),
        local_time=f.get("local_time"),
        local_time_format=f.get("local_time_format"),
        clock=f.get("clock"),
        multiline=bool(f.get("multiline", False)),
        message_prefix=f.get("message_prefix"),
        tables=tuple(f.get("tables", [])),
    )


def _rule(r: dict[str, Any], record_fields: set[str]) -> Rule:
    pattern = re.compile(r["match"])
    groups = tuple(sorted(pattern.groupindex, key=pattern.groupindex.__getitem__))
    carry = None
    if "carry" in r:
        c = r["carry"]
        sources = (c["from"],) if isinstance(c["from"], str) else tuple(c["from"])
        carry = Carry(sources, tuple(c["key"]), tuple(c["fields"]), c.get("direction", "previous"))
        if carry.direction not in ("previous", "next"):
            raise ValueError(f"rule {r['name']}: carry direction is 'previous' or 'next'")
    emits = tuple(
        Emit(
            context=e["context"],
            event=e.get("event"),
            attributes=dict(e.get("attributes", {})),
            event_attributes=dict(e.get("event_attributes", {})),
            parent=e.get("parent"),
            link=e.get("link"),
            relation=e.get("relation"),
            alias=e.get("alias"),
            where=e.get("where"),
            each=dict(e.get("each", {})),
            bounds=bool(e.get("bounds", True)),
        )
        for e in r["emit"]
    )
    known = set(groups) | set(r.get("derive", {})) | set(carry.fields if carry else ()) | record_fields
    for e in emits:
        if ":" not in e.context:
            raise ValueError(f"rule {r['name']}: context {e.context!r} must be 'type:id-template'")
        if e.link and not e.relation:
            raise ValueError(f"rule {r['name']}: a link needs a relation")
        templates = [e.context, e.event or "", e.parent or "", e.link or "", e.alias or ""]
        templates += list(e.attributes.values()) + list(e.event_attributes.values())
        used = set().union(*(fields_of(t) for t in templates))
        unknown = used - known - set(e.each)
        if unknown:
            raise ValueError(f"rule {r['name']}: unknown fields {sorted(unknown)} in templates")
    return Rule(
        name=r["name"],
        match=r["match"],
        groups=groups,
        emit=emits,
        input_field=r.get("field", "message"),
        logger=r.get("logger"),
        derive=dict(r.get("derive", {})),
        carry=carry,
        samples=tuple(r.get("samples", [])),
    )
