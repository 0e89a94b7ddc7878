"""JSON exactly as the Go convertor writes it: encoding/json over image-spec v1.1.1 structs (convertor-spec.md §3.7).

Go round-trips every object it changes through a struct, so each known field follows its struct tag: fields in
declaration order, `omitempty` fields left out when empty, maps sorted by key, times re-formatted as RFC 3339
with trimmed nanoseconds. Unlike Go, fields a struct does not declare are not dropped: they follow the known
ones, sorted by key, with their values as read (objects keep their key order, numbers their literal text).
Objects that only hold known fields, such as everything the Go convertor writes, come out byte for byte as Go
writes them.

Go-isms not copied: Go matches JSON keys to struct fields case-insensitively (we match exactly), and fails
on a known field of the wrong JSON type where we raise ValueError too, naming the field.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, auto
from typing import Any

# Image documents nest a few levels (a config's history, a descriptor's platform); this bounds what the
# recursive walks over them (marshalling, comparing) can meet.
MAX_DEPTH = 64


class RawNumber(str):
    """A JSON number that is not an integer, kept as its literal text so that it is written back unchanged."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse(data: bytes) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity); non-integer numbers come back as RawNumber. ValueError if malformed
    or nested more than MAX_DEPTH deep."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_float=RawNumber, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    """Without recursion: Python's own would fail first on a hostile document."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON nested more than {MAX_DEPTH} levels deep")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


class Kind(Enum):
    STRING = auto()
    INT = auto()
    BOOL = auto()
    TIME = auto()  # *time.Time
    STRINGS = auto()  # []string, []digest.Digest
    MAP = auto()  # map[string]string
    SET = auto()  # map[string]struct{}: values are written as {}
    STRUCT = auto()  # a struct value: always written, even with omitempty
    POINTER = auto()  # a pointer to a struct: nil is null, or left out with omitempty
    STRUCTS = auto()  # a slice of structs


@dataclass(frozen=True)
class Field:
    key: str
    kind: Kind
    omitempty: bool = False
    schema: "Schema | None" = None  # for STRUCT, POINTER and STRUCTS


Schema = tuple[Field, ...]

# image-spec v1.1.1 specs-go/v1: descriptor.go, manifest.go, index.go, config.go.
PLATFORM: Schema = (
    Field("architecture", Kind.STRING),
    Field("os", Kind.STRING),
    Field("os.version", Kind.STRING, omitempty=True),
    Field("os.features", Kind.STRINGS, omitempty=True),
    Field("variant", Kind.STRING, omitempty=True),
)
DESCRIPTOR: Schema = (
    Field("mediaType", Kind.STRING),  # no omitempty in v1.1.1
    Field("digest", Kind.STRING),
    Field("size", Kind.INT),
    Field("urls", Kind.STRINGS, omitempty=True),
    Field("annotations", Kind.MAP, omitempty=True),
    Field("data", Kind.STRING, omitempty=True),  # []byte: base64 text, kept as written
    Field("platform", Kind.POINTER, omitempty=True, schema=PLATFORM),
    Field("artifactType", Kind.STRING, omitempty=True),
)
MANIFEST: Schema = (
    Field("schemaVersion", Kind.INT),
    Field("mediaType", Kind.STRING, omitempty=True),
    Field("artifactType", Kind.STRING, omitempty=True),
    Field("config", Kind.STRUCT, schema=DESCRIPTOR),
    Field("layers", Kind.STRUCTS, schema=DESCRIPTOR),
    Field("subject", Kind.POINTER, omitempty=True, schema=DESCRIPTOR),
    Field("annotations", Kind.MAP, omitempty=True),
)
INDEX: Schema = (
    Field("schemaVersion", Kind.INT),
    Field("mediaType", Kind.STRING, omitempty=True),
    Field("artifactType", Kind.STRING, omitempty=True),
    Field("manifests", Kind.STRUCTS, schema=DESCRIPTOR),
    Field("subject", Kind.POINTER, omitempty=True, schema=DESCRIPTOR),
    Field("annotations", Kind.MAP, omitempty=True),
)
IMAGE_CONFIG: Schema = (
    Field("User", Kind.STRING, omitempty=True),
    Field("ExposedPorts", Kind.SET, omitempty=True),
    Field("Env", Kind.STRINGS, omitempty=True),
    Field("Entrypoint", Kind.STRINGS, omitempty=True),
    Field("Cmd", Kind.STRINGS, omitempty=True),
    Field("Volumes", Kind.SET, omitempty=True),
    Field("WorkingDir", Kind.STRING, omitempty=True),
    Field("Labels", Kind.MAP, omitempty=True),
    Field("StopSignal", Kind.STRING, omitempty=True),
    Field("ArgsEscaped", Kind.BOOL, omitempty=True),
)
ROOTFS: Schema = (
    Field("type", Kind.STRING),
    Field("diff_ids", Kind.STRINGS),
)
HISTORY: Schema = (
    Field("created", Kind.TIME, omitempty=True),
    Field("created_by", Kind.STRING, omitempty=True),
    Field("author", Kind.STRING, omitempty=True),
    Field("comment", Kind.STRING, omitempty=True),
    Field("empty_layer", Kind.BOOL, omitempty=True),
)
IMAGE: Schema = (
    Field("created", Kind.TIME, omitempty=True),
    Field("author", Kind.STRING, omitempty=True),
    *PLATFORM,  # embedded, inline
    Field("config", Kind.STRUCT, omitempty=True, schema=IMAGE_CONFIG),
    Field("rootfs", Kind.STRUCT, schema=ROOTFS),
    Field("history", Kind.STRUCTS, omitempty=True, schema=HISTORY),
)


def marshal(obj: Mapping[str, Any], schema: Schema) -> bytes:
    """`obj` as Go's json.Marshal writes the struct `schema` describes; ValueError on a mistyped known field."""
    return _struct(obj, schema, "").encode("utf-8")


# encoding/json escapes these on top of what JSON requires (HTMLEscape, plus the JavaScript line separators).
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPED = re.compile("[<>&\u2028\u2029]")
# A surrogate left in a decoded string had no partner; Go decodes it as U+FFFD.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _string(value: str) -> str:
    text = json.dumps(_LONE_SURROGATE.sub("\ufffd", value), ensure_ascii=False)
    return _GO_ESCAPED.sub(lambda m: _GO_ESCAPES[m.group()], text)


def _raw(value: Any) -> str:
    """A value no struct describes, written as read."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_raw(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(k)}:{_raw(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _struct(obj: Any, schema: Schema, path: str) -> str:
    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path or 'document'}: expected a JSON object, found {_json_type(obj)}")
    parts: list[str] = []
    prefix = f"{path}." if path else ""
    for field in schema:
        text = _field(field, obj.get(field.key), prefix + field.key)
        if text is not None:
            parts.append(f"{_string(field.key)}:{text}")
    known = {field.key for field in schema}
    parts.extend(f"{_string(key)}:{_raw(obj[key])}" for key in sorted(set(obj) - known))
    return "{" + ",".join(parts) + "}"


def _field(field: Field, value: Any, path: str) -> str | None:
    """The field's JSON text, or None to leave it out. A JSON null reads as Go's zero value."""
    kind = field.kind
    if kind is Kind.STRUCT:
        return _struct(value, field.schema or (), path)
    if kind is Kind.POINTER:
        if value is None:
            return None if field.omitempty else "null"
        return _struct(value, field.schema or (), path)
    if kind is Kind.TIME:
        if value is None:
            return None if field.omitempty else "null"
        text = _expect(value, str, path)
        try:
            return _string(go_time(text))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if kind is Kind.STRING:
        text = _expect("" if value is None else value, str, path)
        return None if field.omitempty and not text else _string(text)
    if kind is Kind.INT:
        number = 0 if value is None else value
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"{path}: expected an integer, found {_json_type(number)}")
        return None if field.omitempty and not number else str(number)
    if kind is Kind.BOOL:
        flag = _expect(False if value is None else value, bool, path)
        return None if field.omitempty and not flag else ("true" if flag else "false")
    if kind in (Kind.STRINGS, Kind.STRUCTS):
        if value is None or (field.omitempty and not value):
            return None if field.omitempty else "null"
        items = _expect(value, list, path)
        if kind is Kind.STRINGS:
            return "[" + ",".join(_string(_expect(v, str, f"{path}[{i}]")) for i, v in enumerate(items)) + "]"
        return "[" + ",".join(_struct(v, field.schema or (), f"{path}[{i}]") for i, v in enumerate(items)) + "]"
    # MAP and SET
    if value is None or (field.omitempty and not value):
        return None if field.omitempty else "null"
    entries = _expect(value, dict, path)
    if kind is Kind.SET:
        return "{" + ",".join(f"{_string(k)}:{{}}" for k in sorted(entries)) + "}"
    return (
        "{"
        + ",".join(f"{_string(k)}:{_string(_expect(entries[k], str, f'{path}.{k}'))}" for k in sorted(entries))
        + "}"
    )


def _expect(value: Any, kind: type, path: str) -> Any:
    if not isinstance(value, kind) or (kind is str and isinstance(value, RawNumber)):
        raise ValueError(f"{path}: expected {_NAMES[kind]}, found {_json_type(value)}")
    return value


_NAMES: dict[type, str] = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, RawNumber | int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# RFC 3339 as Go's time.Time.UnmarshalJSON accepts it: upper-case T and Z, '.' before the fraction.
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):(\d{2}))")
_GO_NANOS = 9  # Go keeps nanoseconds: further fraction digits are cut off


def go_time(value: str) -> str:
    """`value` re-formatted as Go's time.RFC3339Nano: fraction cut to 9 digits, trailing zeros trimmed, +00:00 as Z."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"time {value!r} is not RFC 3339 (YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm))")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError(f"time {value!r} is out of range: {exc}") from None
    fraction = (match.group(7) or "")[:_GO_NANOS].rstrip("0")
    zone = match.group(8)
    if zone != "Z":
        zone_hours, zone_minutes = int(match.group(10)), int(match.group(11))
        if zone_hours > 23 or zone_minutes > 59:
            raise ValueError(f"time {value!r} has an out-of-range zone offset")
        if zone_hours == zone_minutes == 0:
            zone = "Z"
    return value[:19] + (f".{fraction}" if fraction else "") + zone
