"""The converter definition language, checked like lnav checks its formats: a JSON Schema, one clear error.

`converters/definition.schema.json` (draft 2020-12; installed with the built-in definitions as the data
package `dnpc2otel.converters`) lists every key a definition may have, with its type and meaning; editors
use it to complete and check the TOML files. `check()` validates a definition's raw TOML table against it
and turns jsonschema's most relevant error into one line that names the entry and the key:
`format text: unknown key 'tmie' (did you mean 'time'?)`. The checks a schema cannot express (patterns,
template fields, rule and context type names) are in `definitions`, with `close_match` and `re2_error`.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance

from ..errors import DefinitionError, first_line

SCHEMA_FILE = "definition.schema.json"

# arrays of tables at the top level, and what one entry is called in messages
_ENTRIES = {
    "formats": "format",
    "rules": "rule",
    "queries": "query",
    "samples": "sample",
    "causality": "causality",
    "views": "view",
    "summary": "summary",
    "bindings": "binding",
}
# entries with a `name` key: called by it, else by position
_NAMED = ("formats", "rules", "queries", "views", "bindings")
_RULE_PARTS = {"samples": "sample", "emit": "emit"}
_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "a table",
    "null": "null",
}


def schema_path() -> Path:
    from .definitions import builtin_dir  # definitions imports this module

    return builtin_dir() / SCHEMA_FILE


@functools.cache
def schema() -> dict[str, Any]:
    path = schema_path()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DefinitionError(f"{path}: cannot read the schema of converter definitions: {e}") from None


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def check(path: Path, raw: dict[str, Any]) -> None:
    """Raise DefinitionError (one line: file, entry, key) unless `raw` is a valid definition."""
    error = best_match(_validator().iter_errors(raw), key=_relevance)
    if error is not None:
        entry, message = describe(raw, error)
        raise DefinitionError(f"{path}: {entry}: {message}" if entry else f"{path}: {message}")


def _relevance(error: ValidationError) -> tuple:
    # jsonschema's order (shallow errors first), but at one depth an unknown key beats every other error:
    # `mtach = …` also makes `match` missing, and the misspelling is what the user must see
    base = relevance(error)
    return (base[0], error.validator == "additionalProperties", *base[1:])


def describe(raw: dict[str, Any], error: ValidationError) -> tuple[str, str]:
    """(entry, message) of a validation error: ('rule task_launched sample 2', "unknown key 'expcet' …")."""
    entry, parts = locate(raw, list(error.absolute_path))
    subject = key_ref(parts) or ("the entry" if entry else "the definition")
    v, value, instance = error.validator, error.validator_value, error.instance
    custom = None if v in ("type", "required", "additionalProperties") else _error_message(error)
    if "propertyNames" in error.relative_schema_path and parts in (["contexts"], ["describes"]):
        what = "context" if parts == ["contexts"] else "describes"
        return f"{what} {instance}", custom or f"invalid name: {first_line(error.message)}"
    if v == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        return entry, unknown_key(extra[0] if extra else "?", known, parts)
    if custom:
        return entry, f"{key_ref(parts)} {custom}, not {show(instance)}" if parts else custom
    if v == "type":
        below = list(error.relative_schema_path)[-2:-1]
        if below == ["additionalProperties"] and parts and isinstance(parts[-1], str):
            # a key beyond the declared ones: a misspelled known key?
            known = list(_schema_at(list(error.absolute_schema_path)[:-2]).get("properties", {}))
            if close_match(parts[-1], known):
                return entry, unknown_key(parts[-1], known, parts[:-1])
        types = [value] if isinstance(value, str) else list(value)
        wanted = " or ".join(_TYPES.get(t, t) for t in types)
        return entry, f"{subject} must be {wanted}, not {show(instance)}"
    if v == "required":
        missing = [k for k in value if k not in instance]
        return entry, f"missing key '{key_name([*parts, missing[0] if missing else '?'])}'"
    if v == "dependentRequired":
        needs = [(k, r) for k, rs in value.items() if k in instance for r in rs if r not in instance]
        key, missing = needs[0] if needs else ("?", "?")
        return entry, f"key '{key_name([*parts, key])}' needs a '{key_name([*parts, missing])}'"
    if v == "enum":
        return entry, f"{subject} must be one of {', '.join(show(x) for x in value)}, not {show(instance)}"
    if v == "minimum":
        return entry, f"{subject} must be at least {value}, not {show(instance)}"
    if v in ("minItems", "minLength") and value == 1:
        return entry, f"{subject} must not be empty"
    if v == "pattern":
        return entry, f"{subject} must match {show(value)}, not {show(instance)}"
    return entry, f"{subject}: {first_line(error.message)}"


def locate(raw: dict[str, Any], path: Sequence[Any]) -> tuple[str, list[Any]]:
    """The entry a path into the definition is in ('format text', 'rule x sample 2'), and the key path in it.

    Entries are named by their `name`, else by their position counted from 1 (the second sample: 'sample 2').
    """
    path = list(path)
    if not path:
        return "", []
    head = path[0]
    if head in _ENTRIES and len(path) > 1 and isinstance(path[1], int):
        item = _item(raw.get(head), path[1])
        name = item.get("name") if head in _NAMED and isinstance(item, dict) else None
        label = f"{_ENTRIES[head]} {name if isinstance(name, str) and name else path[1] + 1}"
        rest = path[2:]
        if head == "rules" and len(rest) > 1 and rest[0] in _RULE_PARTS and isinstance(rest[1], int):
            label += f" {_RULE_PARTS[rest[0]]} {rest[1] + 1}"
            rest = rest[2:]
        return label, rest
    if head == "contexts" and len(path) > 1:
        return f"context {path[1]}", path[2:]
    if head == "describes" and len(path) > 1:
        return f"describes {path[1]}", path[2:]
    if head == "system":
        return "system", path[1:]
    return "", path


def entry_name(kind: str, name: str | None, index: int) -> str:
    """How messages call an entry: 'rule task_launched', or 'sample 2' (positions count from 1)."""
    return f"{kind} {name if name else index + 1}"


def key_name(parts: Sequence[Any]) -> str:
    """A key path in TOML's dotted form, up to the first array position: carry.from, attributes."parsl.task.id"."""
    names: list[str] = []
    for p in parts:
        if isinstance(p, int):
            break
        names.append(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p, ensure_ascii=False))
    return ".".join(names)


def key_ref(parts: Sequence[Any]) -> str:
    """How a message names a key: "key 'carry.from'", "key 'carry.key' item 2" (items count from 1); or ''."""
    key = key_name(parts)
    if not key:
        return ""
    positions = [p for p in parts if isinstance(p, int)]
    return f"key '{key}'" + (f" item {positions[0] + 1}" if positions else "")


def unknown_key(key: str, known: Iterable[str], parents: Sequence[Any] = ()) -> str:
    prefix = key_name(parents)
    full = f"{prefix}.{key}" if prefix else key
    match = close_match(key, known)
    suggestion = f" (did you mean '{prefix + '.' if prefix else ''}{match}'?)" if match else ""
    return f"unknown key '{full}'{suggestion}"


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate the user probably meant (a misspelling, or the start of a longer key), or None."""
    candidates = [c for c in candidates if c != word]
    matches = difflib.get_close_matches(word, candidates, n=1)
    if matches:
        return matches[0]
    longer = [c for c in candidates if len(word) >= 3 and c.startswith(word)]
    return longer[0] if len(longer) == 1 else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    match = close_match(word, candidates)
    return f" (did you mean '{match}'?)" if match else ""


def show(value: Any) -> str:
    """A value as a TOML user would write it, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _error_message(error: ValidationError) -> str | None:
    """The schema's own wording of an error (`errorMessage`, as VS Code reads it), also for a oneOf's branches."""
    e: ValidationError | None = error
    while e is not None:
        if isinstance(e.schema, dict) and isinstance(e.schema.get("errorMessage"), str):
            return e.schema["errorMessage"]
        e = e.parent
    return None


def _schema_at(path: list[Any]) -> dict[str, Any]:
    """The subschema at an absolute schema path, which goes through the schema's local `#/$defs/…` refs."""
    node: Any = schema()
    for p in path:
        while isinstance(node, dict) and p not in node and str(node.get("$ref", "")).startswith("#/"):
            node = functools.reduce(lambda n, k: n[k], node["$ref"][2:].split("/"), schema())
        if p == "$ref":
            continue
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return {}
    return node if isinstance(node, dict) else {}


def _item(items: Any, index: int) -> Any:
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


# ---------------------------------------------------------------- RE2, as DuckDB compiles the patterns
_re2_lock = threading.Lock()


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@functools.lru_cache(maxsize=4096)
def re2_error(pattern: str) -> str | None:
    """Why DuckDB's RE2 rejects a pattern (rules and record patterns run in DuckDB), or None."""
    with _re2_lock:
        try:
            _duckdb().execute("SELECT regexp_matches('x', ?)", [pattern]).fetchone()
        except duckdb.Error as e:
            return first_line(e).removeprefix("Invalid Input Error: ")
    return None
