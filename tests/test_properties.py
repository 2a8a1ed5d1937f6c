"""Property-based tests (hypothesis) of the pieces every source goes through: time parsing, SQL quoting of
values and templates, the definition loader on damaged definitions, and the log reader on arbitrary bytes.

Each property is checked on generated inputs, not examples: exact nanoseconds for every epoch text, NULL (never
an error) for text that is not a time, literals that round-trip through DuckDB whatever they hold, and a
definition loader that answers any malformed TOML with one DefinitionError line.
"""

from __future__ import annotations

import shutil
import tomllib
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

hypothesis = pytest.importorskip("hypothesis")
from conftest import CORPUS, REPO  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dnpc2otel.errors import DefinitionError, UserError  # noqa: E402
from dnpc2otel.sources import definitions, timeparse  # noqa: E402
from dnpc2otel.sources.lines import load_lines  # noqa: E402
from dnpc2otel.sources.templates import fields_of, quote_ident, quote_literal, to_sql  # noqa: E402

CON = duckdb.connect()
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")  # what the line reader hands on
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sql(expr: str, value: str | None):
    return CON.execute(f"SELECT {expr} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchone()[0]


@FAST
@given(st.integers(min_value=0, max_value=4_000_000_000), st.integers(min_value=0, max_value=999_999_999),
       st.integers(min_value=0, max_value=9))
def test_epoch_text_is_exact_to_the_nanosecond(seconds, nanos, digits):
    # Parsl writes 6 digits, other tools 0-9: the value is the text's, never a float's rounding of it
    frac = f"{nanos:09d}"[:digits]
    text = f"{seconds}.{frac}" if digits else str(seconds)
    expected = seconds * 1_000_000_000 + int(frac.ljust(9, "0") or 0)
    assert _sql(timeparse.epoch_text_ns("v"), text) == expected


@FAST
@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
       st.sampled_from(["%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S,%f", "%Y-%m-%d %H:%M:%S"]))
def test_strptime_formats_give_the_wall_clock_time(moment, fmt):
    if "%f" not in fmt:
        moment = moment.replace(microsecond=0)
    text = moment.strftime(fmt)
    expected = (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert _sql(timeparse.to_ns("v", fmt), text) == expected


@FAST
@given(st.text(max_size=40), st.sampled_from(["epoch", "epoch_ms", "epoch_us", "timestamp", "%Y-%m-%d %H:%M:%S"]))
def test_text_that_is_no_time_gives_null_not_an_error(text, fmt):
    got = _sql(timeparse.to_ns("v", fmt), text)
    assert got is None or isinstance(got, int)


@FAST
@given(st.text(TEXT))
def test_literals_and_identifiers_round_trip_whatever_they_hold(text):
    assert CON.execute(f"SELECT {quote_literal(text)}").fetchone()[0] == text
    assert CON.execute(f"SELECT 1 AS {quote_ident(text or 'x')}").description[0][0] == (text or "x")


@FAST
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(TEXT, max_size=12),
                       max_size=4),
       st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="{}\x00"),
                        max_size=6), min_size=1, max_size=5))
def test_templates_substitute_fields_and_nothing_else(values, pieces):
    names = sorted(values)
    template = "".join(p + (f"{{{names[i % len(names)]}}}" if names else "") for i, p in enumerate(pieces))
    assert fields_of(template) <= set(names)
    cols = ", ".join(f"{quote_literal(values[n])} AS {quote_ident(n)}" for n in names) or "1 AS x"
    got = CON.execute(f"SELECT {to_sql(template)} FROM (SELECT {cols})").fetchone()[0]
    used = [values[names[i % len(names)]] for i in range(len(pieces))] if names else []
    expected = "".join(p + (used[i] if names else "") for i, p in enumerate(pieces))
    if "" in used:  # an empty field is an absent one (a group that matched nothing): the value is NULL
        assert got is None
    else:
        assert got == expected


@FAST
@given(st.integers(min_value=-(10**12), max_value=10**12), st.integers(min_value=0, max_value=3),
       st.text(TEXT, max_size=5))
def test_a_cast_inside_text_normalises_the_number_or_gives_null(n, zeros, junk):
    template = "try:{task|int}.{try}"
    text = ("-" if n < 0 else "") + "0" * zeros + str(abs(n))
    got = CON.execute(f"SELECT {to_sql(template)} FROM (SELECT ? AS task, '1' AS try)", [text]).fetchone()[0]
    assert got == f"try:{n}.1"
    bad = CON.execute(f"SELECT {to_sql(template)} FROM (SELECT ? AS task, '1' AS try)", [f"x{junk}"]).fetchone()[0]
    assert bad is None


# --- the definition loader on damaged definitions -------------------------------------------------------------

BUILTINS = sorted((REPO / "converters").glob("*.toml"))


def _mutations():
    """A real definition's TOML tree with one thing broken: a key renamed, a value of another type, a
    section dropped, a regular expression cut."""
    def mutate(data, path, kind, junk):
        node = data
        for key in path[:-1]:
            node = node[key]
        last = path[-1]
        if kind == "rename":
            node[f"{last}x"] = node.pop(last)
        elif kind == "retype":
            node[last] = junk
        elif kind == "drop":
            node.pop(last)
        elif kind == "cut" and isinstance(node[last], str):
            node[last] = node[last][: max(1, len(node[last]) // 2)]
        return data
    return mutate


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            yield from _paths(v, prefix + (i,))


def _dump(value, key=None) -> str:
    """A minimal TOML writer for the loader's input (tables, arrays of tables, scalars, lists)."""
    import json
    out: list[str] = []

    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {scalar(x)}" for k, x in v.items()) + "}"
        raise TypeError(type(v))

    for k, v in value.items():
        if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            out.append(f"{json.dumps(k)} = {scalar(v)}")
    for k, v in value.items():
        if isinstance(v, dict):
            out.append(f"[{json.dumps(k)}]")
            out.extend(f"{json.dumps(a)} = {scalar(b)}" for a, b in v.items())
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                out.append(f"[[{json.dumps(k)}]]")
                out.extend(f"{json.dumps(a)} = {scalar(b)}" for a, b in item.items())
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", BUILTINS, ids=[p.name for p in BUILTINS])
def test_the_mutation_writer_keeps_an_unbroken_definition_loadable(tmp_path, path):
    # without this, a writer bug would make every mutation "fail to load" and the property below prove nothing
    shutil.copy(REPO / "converters" / "definition.schema.json", tmp_path / "definition.schema.json")
    (tmp_path / path.name).write_text(_dump(tomllib.loads(path.read_text())))
    assert definitions.load(tmp_path / path.name).name == definitions.load(path).name


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(BUILTINS), st.data(), st.sampled_from(["rename", "retype", "drop", "cut"]),
       st.sampled_from([7, -1, True, "", "((", [], {"x": 1}, 1.5]))
def test_a_broken_definition_is_one_line_naming_its_file(tmp_path, path, data, kind, junk):
    tree = tomllib.loads(path.read_text())
    paths = [p for p in _paths(tree) if not isinstance(p[-1], int)]
    target = data.draw(st.sampled_from(paths))
    broken = _mutations()(tree, target, kind, junk)
    f = tmp_path / path.name
    shutil.copy(REPO / "converters" / "definition.schema.json", tmp_path / "definition.schema.json")
    f.write_text(_dump(broken))
    try:
        definitions.load(f)
    except DefinitionError as e:
        msg = str(e)
        assert "\n" not in msg.strip() and path.name in msg, msg
    # a mutation may leave a valid definition (an optional key dropped): loading it is then fine too


# --- the log reader on arbitrary bytes -------------------------------------------------------------------------

REAL_LOG = (CORPUS / "htex-2026" / "runinfo" / "000" / "parsl.log").read_bytes()[:20_000]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4000), st.integers(min_value=0, max_value=len(REAL_LOG)))
def test_any_bytes_read_as_lines_without_error(tmp_path, junk, cut):
    f = tmp_path / "parsl.log"
    f.write_bytes(REAL_LOG[:cut] + junk)
    con = duckdb.connect()
    try:
        load_lines(con, f)
    except UserError:
        pass  # a clear error is allowed; anything else is a crash
    rows = con.execute("SELECT count(*), count(DISTINCT line) FROM lines").fetchone()
    assert rows[0] == rows[1], "every line numbered once"
    assert rows[0] <= (REAL_LOG[:cut] + junk).count(b"\n") + 1
