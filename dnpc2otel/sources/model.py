"""The converter definition model: what a loaded definition is (dataclasses, no loading logic).

`definitions` builds these from TOML files and checks them; `observer`, `records`, `rules`, `sqlite` and
`jsondoc` execute them; `reconcile` reads the context types, causal pairs and the system's declarations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("lines", "jsonl", "sqlite", "json")
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
    # gathered by the catalog from every definition (never declared in [contexts.NAME]):
    described_by: tuple[Expectation, ...] = ()  # sources that describe only some contexts of this type
    bindings: tuple[Binding, ...] = ()  # how a context of this type no record binds may get its parent


@dataclass(frozen=True)
class Expectation:
    """Which contexts of a type a source is expected to describe (`[describes.TYPE]`): by default, once a source
    describes some context of a type in a run, it should describe all of them (else `missing_in_source`)."""

    source: str  # the definition (converter) name
    context_type: str
    expected: bool = True  # false: the source describes such contexts incidentally, a missing one is no news
    having: tuple[str, ...] = ()  # only contexts with a chain of children of these types (executor › block)


@dataclass(frozen=True)
class Binding:
    """`[[bindings]]`: a parent that no record names, inferred from evidence that ties the two contexts one to one.

    A context of type `context` without any claimed parent of type `parent` is bound to the parent context whose
    `events` carry, in their event attributes, the values of the `match` attributes of the evidence context (the
    context itself, or its child of type `through`) at times inside the evidence context's first..last
    observation. Only a one-to-one match binds (see reconcile.contexts); the binding says dnpc.binding =
    inferred and `inferred` says how.
    """

    name: str
    source: str  # the definition declaring it: the observation it adds is that source's
    priority: int
    context: str
    parent: str
    match: dict[str, str]  # attribute of the evidence context → event attribute of the parent's events
    events: tuple[str, ...]
    through: str | None = None  # the evidence is the context's child of this type
    inferred: str = ""


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
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sqlite: columns added as NULL if absent

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
    # nest by path: the parent is the context reached from `parent` through one child of each type in turn
    parent_path: tuple[str, ...] = ()
    # bind by value: `parent`'s id template is the value of this attribute of the parent, not its id
    parent_by: str | None = None
    link: str | None = None
    relation: str | None = None
    alias: str | None = None
    where: str | None = None
    each: dict[str, str] = field(default_factory=dict)
    bounds: bool = True
    time: str | None = None  # a field holding the event's time, instead of the record's
    time_format: str = "epoch"

    @property
    def context_type(self) -> str:
        return self.context.split(":", 1)[0]

    @property
    def parent_ref(self) -> tuple[str, str] | None:
        """(related_type, id template) of the parent claim as observations store it: a path or a value lookup
        is encoded in the type ('try/executor_task/worker_execution', 'block[parsl.block.job_id]') for the
        core to resolve (reconcile.contexts.resolve_references)."""
        if not self.parent:
            return None
        ptype, pid = self.parent.split(":", 1)
        if self.parent_path:
            ptype = "/".join((ptype, *self.parent_path))
        elif self.parent_by:
            ptype = f"{ptype}[{self.parent_by}]"
        return ptype, pid


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
    describes: tuple[Expectation, ...] = ()  # which contexts of a type this source is expected to describe
    bindings: tuple[Binding, ...] = ()  # parents this source's evidence lets the core infer

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
