"""The converter definition language is validated like lnav validates its formats: a misspelled key, a
wrong type, a bad pattern or an unknown field is one clear error naming the file, the entry and the key,
never a silent default. The language is published as a JSON Schema (converters/definition.schema.json)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from dnpc2otel.errors import DefinitionError
from dnpc2otel.sources.definitions import builtin_dir, load, load_all, load_catalog

BUILTIN = sorted(builtin_dir().glob("*.toml"))
SCHEMA = builtin_dir() / "definition.schema.json"


def _copy(tmp_path: Path, name: str, pattern: str, replacement: str) -> Path:
    """A built-in definition copied into tmp_path/defs with the first match of `pattern` replaced."""
    text = (builtin_dir() / name).read_text(encoding="utf-8")
    changed, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, f"{pattern!r} is not in {name} any more: update the test"
    defs = tmp_path / "defs"
    defs.mkdir(exist_ok=True)
    path = defs / name
    path.write_text(changed, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(DefinitionError) as e:
        load(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message


# ---------------------------------------------------------------- the three misspellings of a new user
def test_misspelled_format_key(tmp_path):
    path = _copy(tmp_path, "parsl_dfk.toml", r'^time = "created".*$', 'tmie = "asctime"')
    assert _error(path) == f"{path}: format text: unknown key 'tmie' (did you mean 'time'?)"
    with pytest.raises(DefinitionError, match=re.escape("format text: unknown key 'tmie'")):
        load_all([path.parent])


def test_misspelled_rule_key(tmp_path):
    path = _copy(tmp_path, "parsl_dfk.toml", r"^match = ", "mtach = ")
    # the misspelling, not the `match` it leaves missing
    assert _error(path) == f"{path}: rule dfk_start: unknown key 'mtach' (did you mean 'match'?)"


def test_misspelled_sample_key(tmp_path):
    text = (builtin_dir() / "parsl_dfk.toml").read_text(encoding="utf-8")
    rules_start = text.index("[[rules]]")
    at = text.index("expect = ", rules_start)
    defs = tmp_path / "defs"
    defs.mkdir()
    path = defs / "parsl_dfk.toml"
    path.write_text(text[:at] + "expcet" + text[at + len("expect"):], encoding="utf-8")
    # which rule and sample the misspelling landed in (samples are being rewritten as raw lines)
    rules = tomllib.loads(path.read_text(encoding="utf-8"))["rules"]
    rule, n = next((r["name"], i) for r in rules for i, s in enumerate(r.get("samples", []), 1) if "expcet" in s)
    assert _error(path) == f"{path}: rule {rule} sample {n}: unknown key 'expcet' (did you mean 'expect'?)"


# ---------------------------------------------------------------- other mistakes
@pytest.mark.parametrize(
    ("name", "pattern", "replacement", "expected"),
    [
        ("parsl_dfk.toml", r"^priority = 20", 'priority = "high"', "key 'priority' must be an integer, not 'high'"),
        ("parsl_dfk.toml", r'^kind = "lines"', 'kind = "line"',
         "format text: key 'kind' must be one of 'lines', 'jsonl', 'sqlite', 'json', not 'line'"),
        ("parsl_dfk.toml", r'^multiline = true', 'multiline = "yes"',
         "format text: key 'multiline' must be a boolean, not 'yes'"),
        ("htex_manager.toml", r'^time = "created"', 'time = "creatd"',
         "format text: key 'time': 'creatd' is not a record field of the format (did you mean 'created'?)"),
        ("htex_manager.toml", r'^clock = "manager:\{manager\}"', 'clock = "manager:{manger}"',
         "format text: key 'clock': 'manger' is not a path group of 'files' (did you mean 'manager'?)"),
        ("htex_manager.toml", r"^match = '\^Manager \(\?:started\|initializing\)\$'", "match = '^Manager (?:started'",
         "rule manager_started: key 'match' is not a valid regular expression: missing ), unterminated subpattern"),
        # Python reads a lookahead, DuckDB's RE2 (which runs the rules) does not
        ("htex_manager.toml", r"^match = '\^Manager \(\?:started\|initializing\)\$'", "match = '^Manager (?=started)'",
         "rule manager_started: key 'match' is not a valid RE2 regular expression (DuckDB reads it): "
         "invalid perl operator: (?="),
        ("htex_manager.toml", r"^record = '\^", "record = '^(?=x)",
         "format text: key 'record' is not a valid RE2 regular expression"),
        ("htex_manager.toml", r"^files = '\(\?P<rundir>", "files = '(?P<rundir",
         "format text: key 'files' is not a valid regular expression"),
        ("htex_manager.toml", r'"parsl.htex.manager.id" = "\{manager\}"', '"parsl.htex.manager.id" = "{manger}"',
         "rule manager_started emit 1: key 'attributes.\"parsl.htex.manager.id\"': unknown field 'manger' "
         "(did you mean 'manager'?)"),
        ("htex_manager.toml", r'event = "started", parent = "block:', 'event = "started", parent = "block/',
         "rule manager_started emit 1: key 'parent' must have the form 'type:{id template}', not 'block/"),
        ("htex_manager.toml", r"^match = '\^Manager will spawn", "field = \"levl\"\nmatch = '^Manager will spawn",
         "rule manager_workers: key 'field': 'levl' is not a record field (did you mean 'level'?)"),
        ("workqueue_transactions.toml", r'from = "worker_connection"', 'from = "worker_conection"',
         "rule worker_resources: key 'carry.from': unknown rule 'worker_conection' "
         "(did you mean 'worker_connection'?)"),
        ("workqueue_transactions.toml", r'fields = \["addr"\]', 'fields = ["adr"]',
         "rule worker_resources: key 'carry.fields': rule worker_connection has no field 'adr' (did you mean 'addr'?)"),
        ("workqueue_transactions.toml", r'direction = "previous"', 'direction = "before"',
         "rule worker_resources: key 'carry.direction' must be one of 'previous', 'next', not 'before'"),
        ("monitoring_db.toml", r"^expect = \{ workflow = 2", "expect = { wrkflow = 2",
         "sample 1: key 'expect': unknown query 'wrkflow' (did you mean 'workflow'?)"),
        ("monitoring_db.toml", r"^expect = \{ workflow = 2", 'expect = { workflow = "two"',
         "sample 1: key 'expect.workflow' must be an integer, not 'two'"),
        ("parsl_dfk.toml", r"^\[contexts\.task\]\n", '[contexts.task]\nparnts = ["workflow"]\n',
         "context task: unknown key 'parnts' (did you mean 'parents'?)"),
        ("parsl_dfk.toml", r"^\[\[rules\]\]",
         '[[causality]]\nbefore = "try_launched"\nafter = "try.running"\n\n[[rules]]',
         "causality 1: key 'before' must have the form 'type.event', not 'try_launched'"),
        ("parsl_dfk.toml", r"^\[\[formats\]\]", "[[format]]", "unknown key 'format' (did you mean 'formats'?)"),
    ],
    ids=["priority_type", "kind_enum", "multiline_type", "time_field", "clock_field", "match_python", "match_re2",
         "record_re2", "files_python", "template_field", "parent_form", "rule_field", "carry_from", "carry_fields",
         "carry_direction", "db_sample_query", "db_sample_type", "context_key", "causality_form", "top_level_key"],
)
def test_one_clear_error(tmp_path, name, pattern, replacement, expected):
    path = _copy(tmp_path, name, pattern, replacement)
    assert f"{path}: {expected}" in _error(path)


def test_unknown_context_types(tmp_path):
    # parents and max_children name types some definition declares: known only with all definitions loaded
    path = _copy(tmp_path, "parsl_dfk.toml", r'parents = \["executor"\]', 'parents = ["executr"]')
    load(path)
    expected = f"{path}: context block: key 'parents': unknown context type 'executr' (did you mean 'executor'?)"
    for loader in (load_all, load_catalog):
        with pytest.raises(DefinitionError) as e:
            loader([path.parent])
        assert str(e.value) == expected
    path = _copy(tmp_path, "parsl_dfk.toml", r"max_children = \{ executor_task = 1 \}", "max_children = { none = 1 }")
    with pytest.raises(DefinitionError) as e:
        load_catalog([path.parent])
    assert str(e.value) == (
        f"{path}: context try: key 'max_children': unknown context type 'none' (no definition declares it)"
    )


# ---------------------------------------------------------------- rule samples
MINI = textwrap.dedent(r"""
    name = "mini"

    [[formats]]
    name = "text"
    kind = "lines"
    files = '(?P<executor>[^/]+)/mini\.log'
    record = '^(?P<level>[A-Z]+) (?P<message>.*)$'

    [[rules]]
    name = "hello"
    match = '^hello (?P<who>\w+)$'
    emit = [{ context = "greeting:{who}", event = "hello" }]
    samples = [SAMPLE]
""")


def _mini(tmp_path: Path, sample: str) -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(MINI.replace("SAMPLE", sample), encoding="utf-8")
    return path


@pytest.mark.parametrize("sample", [
    '{ release = "1.0", line = "INFO hello bob" }',
    '{ release = "1.0", lines = ["INFO hello bob", "INFO hello ann"], file = "pool/mini.log", format = "text", '
    'expect = 2, attributes = { x = 1 }, origin = "a real run", note = "two lines" }',
])
def test_valid_samples(tmp_path, sample):
    assert load(_mini(tmp_path, sample)).rules[0].samples


@pytest.mark.parametrize(("sample", "expected"), [
    ('{ line = "INFO hello bob" }', "missing key 'release'"),
    ('{ release = "1.0" }', "needs exactly one of 'line' (one raw line) or 'lines' (consecutive raw lines)"),
    ('{ release = "1.0", line = "INFO hello bob", lines = ["INFO hello bob"] }',
     "needs exactly one of 'line' (one raw line) or 'lines' (consecutive raw lines)"),
    # the message alone is not a sample any more: the whole line is
    ('{ release = "1.0", message = "hello bob" }', "unknown key 'message'"),
    ('{ release = "1.0", line = "INFO hello bob", level = "INFO" }', "unknown key 'level'"),
    ('{ release = "1.0", line = "INFO hello bob", fiel = "pool/mini.log" }',
     "unknown key 'fiel' (did you mean 'file'?)"),
    ('{ release = "1.0", line = "INFO hello bob", expect = "one" }', "key 'expect' must be an integer, not 'one'"),
    ('{ release = "1.0", line = "INFO hello bob", expect = -1 }', "key 'expect' must be at least 0, not -1"),
    ('{ release = "1.0", lines = [] }', "key 'lines' must not be empty"),
    ('{ release = "1.0", lines = ["INFO hello bob", 2] }', "key 'lines' item 2 must be a string, not 2"),
    ('{ release = "1.0", line = "INFO hello bob", format = "txt" }',
     "key 'format': no format is named 'txt' (did you mean 'text'?)"),
])
def test_invalid_samples(tmp_path, sample, expected):
    path = _mini(tmp_path, sample)
    assert _error(path) == f"{path}: rule hello sample 1: {expected}"


def test_cli_prints_one_line(tmp_path):
    path = _copy(tmp_path, "parsl_dfk.toml", r'^time = "created".*$', 'tmie = "asctime"')
    proc = subprocess.run([sys.executable, "-m", "dnpc2otel.cli", "converters", str(path.parent)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    expected = f"dnpc2otel: error: {path}: format text: unknown key 'tmie' (did you mean 'time'?)"
    assert proc.stderr.splitlines() == [expected]
    assert "Traceback" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------- the schema and the built-in definitions
@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_definition_validates(path):
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(_schema()).iter_errors(raw)]
    assert not errors
    load(path)


def test_builtin_definitions_load_together():
    catalog = load_catalog()
    assert catalog.types and {d.path for d in catalog.definitions} == set(BUILTIN)


def _schema() -> dict:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def test_schema_is_a_draft_2020_12_schema():
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _objects(node, where="#"):
    """The schema's table declarations (not the conditions of its `if`s)."""
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for k, v in node.items():
            if k != "if":
                yield from _objects(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{where}/{i}")


def test_schema_closes_and_describes_every_table():
    undescribed, open_tables = [], []
    for where, node in _objects(_schema()):
        if node.get("type") == "object" and node.get("additionalProperties", True) is True:
            open_tables.append(where)
        for key, sub in node["properties"].items():
            if isinstance(sub, dict) and sub and "$ref" not in sub and "description" not in sub:
                undescribed.append(f"{where}/{key}")
    assert not undescribed
    assert open_tables == []


def test_a_schema_that_is_not_valid_fails_its_check():
    broken = _schema() | {"type": "table"}
    with pytest.raises(Exception, match="table"):
        Draft202012Validator.check_schema(broken)
