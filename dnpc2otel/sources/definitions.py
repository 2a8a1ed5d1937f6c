"""Converter definitions: one TOML file per source format (see converters/ and the README).

A definition names its source (files matched by a path regular expression relative to the run_dir), how
records are read from it (`formats`), and how records become observations (`rules` for logs, `queries`
for SQLite). It may declare the context types it introduces, which contexts of a type it is expected to
describe (`[describes.TYPE]`), parents to infer where no record names them (`[[bindings]]`), views and
summary lines, and — once per workflow system — the `[system]` facts the core must not assume (the run's
root context type, the reference clock, the service namespace, the files that mark a run). This module
only loads and checks the definitions; `observer` executes them.

Checking is in two steps, each failing with one line that names the file, the entry and the key: the JSON
Schema of the language (converters/definition.schema.json, see `schema`) catches unknown keys and wrong
types; the checks below catch what a schema cannot see (regular expressions Python or DuckDB's RE2 rejects,
template fields no rule has, carries from unknown rules, context types no definition declares).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DefinitionError
from . import schema
from .model import (
    KINDS,
    RESERVED_FIELDS,
    Binding,
    Carry,
    Catalog,
    Causality,
    ContextType,
    Definition,
    Emit,
    Expectation,
    Format,
    Query,
    Rule,
    System,
)
from .schema import close_match, did_you_mean, entry_name, re2_error
from .templates import fields_of

__all__ = [
    "Binding",
    "Carry",
    "Catalog",
    "Causality",
    "ContextType",
    "Definition",
    "Emit",
    "Expectation",
    "Format",
    "KINDS",
    "Query",
    "RESERVED_FIELDS",
    "Rule",
    "System",
    "builtin_dir",
    "context_types",
    "load",
    "load_all",
    "load_catalog",
]


def builtin_dir() -> Path:
    try:
        return Path(str(resources.files("dnpc2otel.converters")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parent.parent / "converters"


def load_all(extra_dirs: list[Path] | None = None, extra_files: list[Path] | None = None) -> list[Definition]:
    """The built-in definitions, then those in $DNPC2OTEL_CONVERTERS (":"-separated directories or .toml
    files), `extra_dirs` and `extra_files` (`--converter FILE`).

    A user definition with the name of a built-in one replaces it. The definitions are checked together
    too (context types declared differently, parents no definition declares, several [system] tables).
    """
    return list(load_catalog(extra_dirs, extra_files).definitions)


def load_catalog(extra_dirs: list[Path] | None = None, extra_files: list[Path] | None = None) -> Catalog:
    """The definitions of load_all, checked together, with their system and context types."""
    places = [builtin_dir()]
    env = os.environ.get("DNPC2OTEL_CONVERTERS")
    if env:
        places += [Path(p) for p in env.split(os.pathsep) if p]
    places += list(extra_dirs or []) + list(extra_files or [])
    by_name: dict[str, Definition] = {}
    for d in places:
        if d.suffix == ".toml" and not d.is_dir():  # one definition file (`--converter`, dnpc2otel.toml)
            if not d.is_file():
                raise DefinitionError(f"converter definition {d} does not exist")
            paths = [d]
        elif d.is_dir():
            paths = sorted(d.glob("*.toml"))
        else:
            raise DefinitionError(f"converter directory {d} does not exist")
        for path in paths:
            definition = load(path)
            by_name[definition.name] = definition
    definitions = list(by_name.values())
    return Catalog(tuple(definitions), _system_of(definitions), context_types(definitions))


def _system_of(definitions: list[Definition]) -> System:
    systems = [d for d in definitions if d.system]
    if len(systems) > 1:
        names = ", ".join(str(d.path) for d in systems)
        raise DefinitionError(f"several definitions declare a [system]: {names}; keep one")
    return systems[0].system if systems and systems[0].system else System()


def context_types(definitions: list[Definition]) -> dict[str, ContextType]:
    """The context types the definitions declare; each parent and `max_children` type must be one of them.

    What other definitions say about a type — which of its contexts they are expected to describe
    (`[describes.TYPE]`), how a context no record binds may get its parent (`[[bindings]]`) — is gathered
    on the type (`described_by`, `bindings`), so that the reconciler reads one declaration per type."""
    types: dict[str, ContextType] = {}
    declared_in: dict[str, Path] = {}
    for d in definitions:
        for name, ct in d.contexts.items():
            if name in types and types[name] != ct:
                raise DefinitionError(f"{d.path}: context {name}: declared differently in {declared_in[name]}")
            types[name] = ct
            declared_in.setdefault(name, d.path)
    root = _system_of(definitions).root_context
    known = set(types) | {root}

    def check_known(d: Definition, entry: str, key: str, t: str) -> None:
        if t not in known:
            raise DefinitionError(f"{d.path}: {entry}: key '{key}': unknown context type {t!r}"
                                  + (did_you_mean(t, known) or " (no definition declares it)"))

    for d in definitions:
        for name, ct in d.contexts.items():
            for key, used in (("parents", ct.parents), ("max_children", tuple(ct.max_children))):
                for t in used:
                    check_known(d, f"context {name}", key, t)
    for d in definitions:
        for e in d.describes:
            check_known(d, f"describes {e.context_type}", "describes", e.context_type)
            for t in e.having:
                check_known(d, f"describes {e.context_type}", "having", t)
            chain = (e.context_type, *e.having)
            for parent, child in zip(chain, chain[1:], strict=False):
                if child in types and parent not in types[child].parents:
                    raise DefinitionError(f"{d.path}: describes {e.context_type}: key 'having': {child} is not a "
                                          f"child type of {parent} (its parents: {list(types[child].parents)})")
            if e.context_type in types:
                t = types[e.context_type]
                types[e.context_type] = replace(t, described_by=(*t.described_by, e))
        for i, r in enumerate(d.rules):
            for j, e in enumerate(r.emit):
                _check_parent_ref(d, f"{entry_name('rule', r.name, i)} emit {j + 1}", e, types, check_known)
        for b in d.bindings:
            _check_binding(d, b, types, check_known)
            t = types[b.context]
            types[b.context] = replace(t, bindings=(*t.bindings, b))
    return types


def _check_parent_ref(d: Definition, entry: str, e: Emit, types: dict[str, ContextType], check_known) -> None:
    """A path descends through child types (each type's `parents` names the one before); a value lookup names a
    known type; and the emitting context may have the path's types (and the first) as parents."""
    if not e.parent or not (e.parent_path or e.parent_by):
        return
    start = e.parent.split(":", 1)[0]
    check_known(d, entry, "parent", start)
    chain = (start, *e.parent_path)
    for parent, child in zip(chain, chain[1:], strict=False):
        check_known(d, entry, "parent_path", child)
        if parent not in types[child].parents:
            raise DefinitionError(f"{d.path}: {entry}: key 'parent_path': {child} is not a child type of {parent} "
                                  f"(its parents: {list(types[child].parents)})")
    own = types.get(e.context_type)
    if own is not None:
        missing = [t for t in chain if t not in own.parents]
        if missing:
            raise DefinitionError(f"{d.path}: {entry}: the parents of {e.context_type} ({list(own.parents)}) lack "
                                  f"{missing[0]}, where the parent may be found")


def _check_binding(d: Definition, b: Binding, types: dict[str, ContextType], check_known) -> None:
    entry = f"binding {b.name}"
    for key in ("context", "parent", "through"):
        value = getattr(b, key)
        if value is not None:
            check_known(d, entry, key, value)
    if b.context not in types:  # the root context has no parent to bind
        raise DefinitionError(f"{d.path}: {entry}: key 'context': {b.context} has no parents to bind")
    if b.parent not in types[b.context].parents:
        raise DefinitionError(f"{d.path}: {entry}: key 'parent': {b.parent} is not one of the parents of "
                              f"{b.context} ({list(types[b.context].parents)})")
    if b.through is not None and (b.through not in types or b.context not in types[b.through].parents):
        raise DefinitionError(f"{d.path}: {entry}: key 'through': {b.through} is not a child type of {b.context}")


class _Invalid(Exception):
    """What is wrong with one entry of a definition (`load` adds the file): 'rule x: key 'match': …'."""

    def __init__(self, entry: str, message: str) -> None:
        super().__init__(f"{entry}: {message}" if entry else message)


def load(path: Path) -> Definition:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DefinitionError(f"{path}: cannot read converter definition: {e}") from None
    schema.check(path, raw)
    try:
        return _build(path, raw)
    except _Invalid as e:
        raise DefinitionError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, re.error) as e:  # what the schema and the checks let through
        raise DefinitionError(f"{path}: invalid converter definition: {type(e).__name__}: {e}") from None


def _build(path: Path, raw: dict[str, Any]) -> Definition:
    name = raw["name"]
    formats = tuple(_format(f, i) for i, f in enumerate(raw.get("formats", [])))
    _unique("format", [f.name for f in formats])
    if not formats and (raw.get("rules") or raw.get("queries")):
        raise _Invalid("", "rules and queries need at least one [[formats]] entry")
    # the named groups of a format's file pattern are fields of all its records (executor label, block …)
    path_fields = {g for f in formats for g in f.files.groupindex}
    record_fields = {n for f in formats for n in f.record_fields}
    both = path_fields & record_fields
    if both:
        raise _Invalid("", f"fields {sorted(both)} are both path groups and record fields; rename one")
    reserved = (path_fields | record_fields) & set(RESERVED_FIELDS)
    if reserved:
        raise _Invalid("", f"fields {sorted(reserved)} are reserved names of record rows; rename them")
    raw_rules = raw.get("rules", [])
    rules = tuple(_rule(r, i, path_fields, record_fields) for i, r in enumerate(raw_rules))
    _unique("rule", [r.name for r in rules])
    by_name = {r.name: r for r in rules}
    formats_by_name = {f.name for f in formats}
    for i, r in enumerate(rules):
        _check_carry(r, i, by_name, path_fields | record_fields)
        _check_templates(r, i, path_fields, record_fields)
        _check_rule_samples(r, i, formats_by_name, path_fields | record_fields)
    queries = tuple(
        Query(q["name"], q["sql"], tuple(q.get("alternatives", []))) for q in raw.get("queries", [])
    )
    _unique("query", [q.name for q in queries])
    for i, sample in enumerate(raw.get("samples", [])):
        key, kind = ("document", "json") if "document" in sample else ("sql", "sqlite")
        if kind not in {f.kind for f in formats}:
            raise _Invalid(entry_name("sample", None, i), f"a `{key}` sample needs a format of kind {kind!r}")
        for q in sample.get("expect", {}):
            if q not in {x.name for x in queries}:
                raise _Invalid(
                    entry_name("sample", None, i),
                    f"key 'expect': unknown query {q!r}{did_you_mean(q, [x.name for x in queries])}",
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
        causality=tuple(_causality(c, i) for i, c in enumerate(raw.get("causality", []))),
        views=tuple((v["name"], v["sql"]) for v in raw.get("views", [])),
        summaries=tuple((v["label"], v["sql"]) for v in raw.get("summary", [])),
        system=_system(name, raw["system"]) if "system" in raw else None,
        describes=tuple(
            Expectation(name, t, bool(v.get("expected", True)), tuple(v.get("having", [])))
            for t, v in raw.get("describes", {}).items()
        ),
        bindings=_bindings(name, int(raw.get("priority", 50)), raw.get("bindings", [])),
    )


def _bindings(source: str, priority: int, raw: list[dict[str, Any]]) -> tuple[Binding, ...]:
    bindings = tuple(
        Binding(name=b["name"], source=source, priority=priority, context=b["context"], parent=b["parent"],
                match=dict(b["match"]), events=tuple(b["events"]), through=b.get("through"), inferred=b["inferred"])
        for b in raw
    )
    _unique("binding", [b.name for b in bindings])
    for i, b in enumerate(bindings):
        if b.through is not None and b.through in (b.context, b.parent):
            raise _Invalid(entry_name("binding", b.name, i),
                           "key 'through': the evidence must be a child type of `context`, not the context or parent")
    return bindings


def _unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise _Invalid(entry_name(kind, None, i), f"key 'name': another {kind} is named {n!r}")
        seen.add(n)


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


def _causality(c: dict[str, Any], index: int) -> Causality:
    ends = []
    for key in ("before", "after"):
        ctype, dot, event = c[key].partition(".")
        if not (ctype and dot and event) or ":" in ctype or ctype.strip() != ctype:
            raise _Invalid(entry_name("causality", None, index), f"key '{key}' must have the form 'type.event', "
                           f"not {c[key]!r}")
        ends.append((ctype, event))
    (before_type, before_event), (after_type, after_event) = ends
    return Causality(before_type, before_event, after_type, after_event)


def _regex(entry: str, key: str, pattern: str, re2: bool = True) -> re.Pattern[str]:
    """A pattern Python compiles and, when it runs in DuckDB (`re2`), RE2 too."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise _Invalid(entry, f"key '{key}' is not a valid regular expression: {e}") from None
    problem = re2_error(pattern) if re2 else None
    if problem:
        raise _Invalid(entry, f"key '{key}' is not a valid RE2 regular expression (DuckDB reads it): {problem}")
    return compiled


def _format(f: dict[str, Any], index: int) -> Format:
    entry = entry_name("format", f.get("name"), index)
    kind = f["kind"]
    if kind not in KINDS:
        raise _Invalid(entry, f"key 'kind' must be one of {', '.join(KINDS)}")
    files = _regex(entry, "files", f["files"], re2=False)
    record = f.get("record")
    if kind == "lines":
        if not record:
            raise _Invalid(entry, "a lines format needs a `record` pattern")
        if "message" not in _regex(entry, "record", record).groupindex:
            raise _Invalid(entry, "key 'record' needs a (?P<message>…) group")
    fmt = Format(
        name=f["name"],
        kind=kind,
        files=files,
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
        columns={t: tuple(cols) for t, cols in f.get("columns", {}).items()},
    )
    if kind != "sqlite":
        for key in ("time", "local_time"):
            value = f.get(key)
            if value is not None and value not in fmt.record_fields:
                raise _Invalid(entry, f"key '{key}': {value!r} is not a record field of the format"
                               + did_you_mean(value, fmt.record_fields))
    unknown = sorted(fields_of(fmt.clock or "") - set(files.groupindex))
    if unknown:
        raise _Invalid(entry, f"key 'clock': {unknown[0]!r} is not a path group of 'files'"
                       + did_you_mean(unknown[0], files.groupindex))
    return fmt


def _rule(r: dict[str, Any], index: int, path_fields: set[str], record_fields: set[str]) -> Rule:
    entry = entry_name("rule", r.get("name"), index)
    pattern = _regex(entry, "match", r["match"])
    groups = tuple(sorted(pattern.groupindex, key=pattern.groupindex.__getitem__))
    input_field = r.get("field", "message")
    if "field" in r and input_field not in record_fields | path_fields:
        raise _Invalid(entry, f"key 'field': {input_field!r} is not a record field"
                       + did_you_mean(input_field, record_fields | path_fields))
    carry = None
    if "carry" in r:
        c = r["carry"]
        sources = (c["from"],) if isinstance(c["from"], str) else tuple(c["from"])
        carry = Carry(sources, tuple(c["key"]), tuple(c["fields"]), c.get("direction", "previous"))
        if carry.direction not in ("previous", "next"):
            raise _Invalid(entry, "key 'carry.direction' must be one of 'previous', 'next'")
    emits = []
    for e in r["emit"]:
        emits.append(Emit(
            context=e["context"],
            event=e.get("event"),
            attributes=dict(e.get("attributes", {})),
            event_attributes=dict(e.get("event_attributes", {})),
            parent=e.get("parent"),
            parent_path=tuple(e.get("parent_path", [])),
            parent_by=e.get("parent_by"),
            link=e.get("link"),
            relation=e.get("relation"),
            alias=e.get("alias"),
            where=e.get("where"),
            each=dict(e.get("each", {})),
            bounds=bool(e.get("bounds", True)),
            time=e.get("time"),
            time_format=e.get("time_format", "epoch"),
        ))
    for j, e in enumerate(emits):
        where = f"{entry} emit {j + 1}"
        for key in ("context", "parent", "link"):
            value = getattr(e, key)
            if value is not None and ":" not in value:
                raise _Invalid(where, f"key '{key}' must have the form 'type:{{id template}}', not {value!r}")
        if e.link and not e.relation:
            raise _Invalid(where, "key 'link' needs a 'relation'")
        if e.parent_path and e.parent_by:
            raise _Invalid(where, "keys 'parent_path' and 'parent_by' exclude each other: a path starts at a known id")
    return Rule(
        name=r["name"],
        match=r["match"],
        groups=groups,
        emit=tuple(emits),
        input_field=input_field,
        logger=r.get("logger"),
        derive=dict(r.get("derive", {})),
        carry=carry,
        samples=tuple(r.get("samples", [])),
    )


def _check_templates(rule: Rule, index: int, path_fields: set[str], record_fields: set[str]) -> None:
    """Every {field} of an emit's templates is a field of the rule's rows (else it would be NULL: no output)."""
    carried = set(rule.carry.fields) if rule.carry else set()
    own = set(rule.groups) | set(rule.derive) | carried
    for j, e in enumerate(rule.emit):
        where = f"{entry_name('rule', rule.name, index)} emit {j + 1}"
        templates = [(k, getattr(e, k)) for k in ("context", "event", "parent", "link", "alias")]
        templates += [(schema.key_name(["attributes", k]), t) for k, t in e.attributes.items()]
        templates += [(schema.key_name(["event_attributes", k]), t) for k, t in e.event_attributes.items()]
        fields = own | set(e.each) | record_fields | path_fields
        if e.time is not None:
            templates.append(("time", "{" + e.time + "}"))
        for key, template in templates:
            unknown = sorted(fields_of(template or "") - fields)
            if unknown:
                # the rule's own fields first: {run_di} is more likely {run_id} than the path group {rundir}
                match = close_match(unknown[0], own | set(e.each)) or close_match(unknown[0], fields)
                raise _Invalid(where, f"key '{key}': unknown field {unknown[0]!r} " + (
                    f"(did you mean {match!r}?)" if match
                    else "(not a group of 'match', a derived, carried, each, record or path field)"
                ))


def _check_carry(rule: Rule, index: int, rules: dict[str, Rule], columns: set[str]) -> None:
    """A carry takes fields of the staged matches of other rules: their groups, record and path fields."""
    c = rule.carry
    if c is None:
        return
    entry = entry_name("rule", rule.name, index)
    own = set(rule.groups) | columns | set(RESERVED_FIELDS)
    for source in c.source_rules:
        if source not in rules:
            raise _Invalid(entry, f"key 'carry.from': unknown rule {source!r}"
                           + did_you_mean(source, [r for r in rules if r != rule.name]))
        lender = set(rules[source].groups) | columns | set(RESERVED_FIELDS)
        for key, names in (("carry.key", c.key), ("carry.fields", c.fields)):
            for n in names:
                if n not in lender:
                    match = close_match(n, rules[source].groups) or close_match(n, lender)
                    raise _Invalid(entry, f"key '{key}': rule {source} has no field {n!r}"
                                   + (f" (did you mean {match!r}?)" if match else ""))
        for n in c.key:
            if n not in own:
                raise _Invalid(entry, f"key 'carry.key': this rule has no field {n!r}" + did_you_mean(n, own))


def _check_rule_samples(rule: Rule, index: int, formats: set[str], columns: set[str]) -> None:
    """A sample that names a format names one of the definition's."""
    for j, sample in enumerate(rule.samples):
        entry = f"{entry_name('rule', rule.name, index)} sample {j + 1}"
        name = sample.get("format")
        if name is not None and name not in formats:
            raise _Invalid(entry, f"key 'format': no format is named {name!r}" + did_you_mean(name, formats))
