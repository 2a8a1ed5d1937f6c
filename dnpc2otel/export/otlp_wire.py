"""OTLP trace protobuf written by hand: spans, events, links and requests as wire-format bytes.

Building `opentelemetry.proto` message objects per span and event was most of export's time (issue 12);
the wire format of the few messages export needs is small (opentelemetry/proto/trace/v1/trace.proto,
common/v1/common.proto), so this module writes the bytes directly. It writes what the protobuf library
would: proto3 defaults left out, oneof members (AnyValue) always written, the status always present;
tests/test_otlp_wire.py decodes its output with the protobuf library and compares it to messages built there.

Attributes come as the JSON text DuckDB stores; an encoded KeyValue is cached per (key, value) in a bounded
cache (events repeat the same provenance and ids).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable

_PACK_U64 = struct.Struct("<Q").pack
_PACK_F64 = struct.Struct("<d").pack
_SMALL = [bytes([i]) for i in range(128)]
_CACHE_LIMIT = 50_000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
SPAN_KIND_INTERNAL = 1


_VARINTS = _SMALL + [bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(128, 1 << 14)]  # lengths, mostly


def varint(n: int) -> bytes:
    if 0 <= n < 16384:
        return _VARINTS[n]
    if n < 0:
        n += 1 << 64  # int64 as protobuf writes it: ten bytes of two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < 16384 else varint(n)) + payload


def fields(tag: bytes, payloads: Iterable[bytes]) -> bytes:
    """A repeated length-delimited field."""
    v = _VARINTS
    return b"".join([tag + (v[len(p)] if len(p) < 16384 else varint(len(p))) + p for p in payloads])


def any_value(v) -> bytes:
    """AnyValue: bool, int (int64; larger ints as text), float, list (ArrayValue), dict (JSON text), else text."""
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            return b"\x18" + varint(v)
        return field(b"\x0a", str(v).encode())
    if isinstance(v, float):
        return b"\x21" + _PACK_F64(v)
    if isinstance(v, list):
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(x)) for x in v))
    if isinstance(v, dict):
        return field(b"\x0a", json.dumps(v, sort_keys=True).encode())
    return field(b"\x0a", ("" if v is None else str(v)).encode())


_kv_cache: dict = {}


def key_value(key: str, v) -> bytes:
    """KeyValue message (no outer tag)."""
    return field(b"\x0a", key.encode()) + field(b"\x12", any_value(v))


def attributes(tag: bytes, attrs: dict) -> bytes:
    """The repeated KeyValue field `tag` of a message; None values are left out. Each framed KeyValue of a
    scalar is cached: events repeat their provenance (source, converter, rule, clock) and ids."""
    out = []
    get = _kv_cache.get
    for k, v in attrs.items():
        t = type(v)
        if t is list or t is dict:
            out.append(field(tag, key_value(k, v)))
            continue
        if v is None:
            continue
        ck = (tag, k, t, v)  # the type: 1, 1.0 and True are equal keys otherwise
        b = get(ck)
        if b is None:
            b = field(tag, key_value(k, v))
            if len(_kv_cache) >= _CACHE_LIMIT:
                _kv_cache.clear()
            _kv_cache[ck] = b
        out.append(b)
    return b"".join(out)


# Every event carries its own source line (`dnpc.line`, an int) and otherwise mostly what other events of its
# span or source carry: the attribute block is cached per text with the line cut out, and the line's KeyValue
# is written between the cached halves. Found with str.find, not a regex (this runs per event): `,"dnpc.line":`
# can only be a key (a quote inside a JSON string is escaped); the text must hold it once, and the first text
# of a cache key is checked against its decoding (a top-level int, equal), else that key is never cut.
LINE_KEY = "dnpc.line"
_LINE = '"dnpc.line":'
_LINE_KEY_FIELD = field(b"\x0a", LINE_KEY.encode())
_TEMPLATE_LIMIT = 100_000
_templates: dict[tuple[bytes, str], tuple[bytes, bytes] | None] = {}


def attributes_json(tag: bytes, text: str | None) -> bytes:
    """`attributes` of a JSON object's text."""
    if not text:
        return b""
    i = text.find(_LINE)
    if i > 0 and text[i - 1] in ",{":
        j = i + len(_LINE)
        k = text.find(",", j)
        if k < 0:
            k = text.find("}", j)
        number = text[j:k]
        if number.isdigit() and len(number) < 19 and text.find(_LINE, k) < 0:
            ck = (tag, text[:j] + text[k:])
            around = _templates.get(ck, False)
            if around is False:
                if len(_templates) >= _TEMPLATE_LIMIT:
                    _templates.clear()
                around = _templates[ck] = _around_line(tag, json.loads(text), int(number))
            if around is not None:
                val = b"\x18" + varint(int(number))
                kv = _LINE_KEY_FIELD + b"\x12" + _SMALL[len(val)] + val
                return around[0] + tag + _SMALL[len(kv)] + kv + around[1]
    d = json.loads(text)
    return attributes(tag, d) if isinstance(d, dict) else b""


def _around_line(tag: bytes, d, line: int) -> tuple[bytes, bytes] | None:
    """(the attributes before the line, those after), or None when the text is not such a block."""
    if not isinstance(d, dict) or type(d.get(LINE_KEY)) is not int or d[LINE_KEY] != line:
        return None
    items = list(d.items())
    at = [k for k, _ in items].index(LINE_KEY)
    return attributes(tag, dict(items[:at])), attributes(tag, dict(items[at + 1:]))


def _fixed64(tag: bytes, n) -> bytes:
    n = max(int(n or 0), 0)
    return tag + _PACK_U64(n) if n else b""


_names: dict[str, bytes] = {}


def event(time_unix_nano, name: str | None, attrs_json: str | None) -> bytes:
    """Span.Event message (no outer tag)."""
    named = _names.get(name) if name else b""
    if named is None:
        named = field(b"\x12", name.encode())
        if len(_names) < _CACHE_LIMIT:
            _names[name] = named
    t = time_unix_nano or 0
    return (b"\x09" + _PACK_U64(t) if t > 0 else b"") + named + attributes_json(b"\x1a", attrs_json)


def link(trace_id: str, span_id: str, attrs_json: str | None) -> bytes:
    """Span.Link message (no outer tag)."""
    return (_id(b"\x0a", trace_id) + _id(b"\x12", span_id) + attributes_json(b"\x22", attrs_json))


def _id(tag: bytes, hex_id: str | None) -> bytes:
    return field(tag, bytes.fromhex(hex_id)) if hex_id else b""


def span(trace_id: str, span_id: str, parent_span_id: str | None, name: str | None, start, end,
         attrs: dict, status_code: str | None, status_message: str | None,
         events: Iterable[bytes] = (), links: Iterable[bytes] = (), dropped_events: int = 0,
         dropped_links: int = 0) -> bytes:
    """Span message (no outer tag), kind INTERNAL; `events` and `links` already encoded by event() and link();
    `dropped_*`: how many more the span has than are sent."""
    start_n = max(int(start or 0), 0)
    end_n = max(int(end or start or 0), 0)
    code = _STATUS.get(status_code or "UNSET", 0)
    status = (field(b"\x12", status_message.encode()) if status_message else b"") + (
        b"\x18" + varint(code) if code else b"")
    return b"".join((
        _id(b"\x0a", trace_id), _id(b"\x12", span_id), _id(b"\x22", parent_span_id),
        field(b"\x2a", name.encode()) if name else b"",
        b"\x30\x01",
        b"\x39" + _PACK_U64(start_n) if start_n else b"",
        b"\x41" + _PACK_U64(end_n) if end_n else b"",
        attributes(b"\x4a", attrs),
        fields(b"\x5a", events),
        b"\x60" + varint(dropped_events) if dropped_events else b"",
        fields(b"\x6a", links),
        b"\x70" + varint(dropped_links) if dropped_links else b"",
        field(b"\x7a", status),
    ))


def resource_scope(resource: dict, scope_name: str, scope_version: str) -> tuple[bytes, bytes]:
    """(ResourceSpans' resource field, ScopeSpans' scope field) for a resource and instrumentation scope."""
    res = field(b"\x0a", attributes(b"\x0a", resource))
    scope = field(b"\x0a", field(b"\x0a", scope_name.encode()) + field(b"\x12", scope_version.encode()))
    return res, scope


def request(groups: Iterable[tuple[tuple[bytes, bytes], list[bytes]]]) -> bytes:
    """ExportTraceServiceRequest of (resource_scope(), [span bytes]) groups."""
    out = []
    for (res, scope), spans in groups:
        scope_spans = scope + fields(b"\x12", spans)
        out.append(field(b"\x0a", res + field(b"\x12", scope_spans)))
    return b"".join(out)


def framed_size(n: int) -> int:
    """Bytes a length-delimited field of an `n`-byte payload takes (one-byte tag)."""
    return 1 + len(varint(n)) + n
