"""Go encoding/json emulation (convertor-spec.md §3.7) against the Go convertor's golden output and Go's rules."""

import hashlib

import pytest

from obdlayout.oci import gojson
from obdlayout.oci.gojson import RawNumber, go_time, marshal, parse

from .shared import shared

GOLDEN_MANIFEST = "42caa56a19e082b872d43f645bb392e25c9e78bce429755bd709fac598265f88"
GOLDEN_CONFIG = "b67b1f1224de620e9a932ab7ff0e819d7dd9d236605dd8027e5ecf2df650e65e"


@pytest.mark.parametrize(
    ("blob", "schema", "size"),
    [(GOLDEN_MANIFEST, gojson.MANIFEST, 641), (GOLDEN_CONFIG, gojson.IMAGE, 584)],
    ids=["manifest", "config"],
)
def test_golden_documents_reserialize_byte_for_byte(blob: str, schema: gojson.Schema, size: int) -> None:
    data = shared("hello-world", "blobs", "sha256", blob).read_bytes()
    again = marshal(parse(data), schema)
    assert again == data
    assert len(again) == size
    assert hashlib.sha256(again).hexdigest() == blob


def test_docker_descriptor_fields_come_out_in_go_struct_order() -> None:
    # convertor-spec.md §3.7: Docker's mediaType,size,digest becomes mediaType,digest,size.
    source = b'{"mediaType":"m","size":3,"digest":"sha256:x","annotations":{"b":"2","a":"1"}}'
    assert marshal(parse(source), gojson.DESCRIPTOR) == (
        b'{"mediaType":"m","digest":"sha256:x","size":3,"annotations":{"a":"1","b":"2"}}'
    )


def test_required_fields_are_written_even_when_absent_and_omitempty_ones_left_out() -> None:
    assert marshal({}, gojson.DESCRIPTOR) == b'{"mediaType":"","digest":"","size":0}'
    assert marshal({"schemaVersion": 2}, gojson.MANIFEST) == (
        b'{"schemaVersion":2,"config":{"mediaType":"","digest":"","size":0},"layers":null}'
    )
    assert marshal({"schemaVersion": 2, "manifests": [], "annotations": {}}, gojson.INDEX) == (
        b'{"schemaVersion":2,"manifests":[]}'
    )
    # Image.config is a struct value: never left out; rootfs.diff_ids has no omitempty.
    assert marshal({"architecture": "amd64", "os": "linux"}, gojson.IMAGE) == (
        b'{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"","diff_ids":null}}'
    )


def test_image_config_follows_go_for_known_fields_and_keeps_the_rest_verbatim() -> None:
    source = (
        b'{"os":"linux","architecture":"arm64","variant":"v8","zzz":{"b":1,"a":[1.50,null]},"config":'
        b'{"User":"","Volumes":null,"ExposedPorts":{"80/tcp":{"x":1},"443/tcp":{}},"ArgsEscaped":false,'
        b'"Hostname":"","Env":[],"Labels":{"z":"1","a":"2"}},"rootfs":{"type":"layers","diff_ids":[]},'
        b'"history":[{"empty_layer":false,"created_by":"x","extra":true}],"docker_version":"1"}'
    )
    assert marshal(parse(source), gojson.IMAGE) == (
        b'{"architecture":"arm64","os":"linux","variant":"v8",'
        b'"config":{"ExposedPorts":{"443/tcp":{},"80/tcp":{}},"Labels":{"a":"2","z":"1"},"Hostname":""},'
        b'"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"x","extra":true}],'
        b'"docker_version":"1","zzz":{"b":1,"a":[1.50,null]}}'
    )


def test_strings_are_escaped_as_go_escapes_them() -> None:
    value = 'a<b>&c\u2028\u2029"\\\n\t\x01\x7fé\ud800'
    assert marshal({"k": value}, ()) == (
        b'{"k":"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\\"\\\\\\n\\t\\u0001\x7f\xc3\xa9\xef\xbf\xbd"}'
    )


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2023-05-04T17:37:03.872958712Z", "2023-05-04T17:37:03.872958712Z"),
        ("2023-05-04T17:37:03.872958712+00:00", "2023-05-04T17:37:03.872958712Z"),
        ("2023-05-04T17:37:03-00:00", "2023-05-04T17:37:03Z"),
        ("2023-05-04T17:37:03.500Z", "2023-05-04T17:37:03.5Z"),
        ("2023-05-04T17:37:03.000Z", "2023-05-04T17:37:03Z"),
        ("2023-05-04T17:37:03.1234567891Z", "2023-05-04T17:37:03.123456789Z"),
        ("2023-05-04T17:37:03.25+08:00", "2023-05-04T17:37:03.25+08:00"),
    ],
)
def test_times_are_reformatted_as_rfc3339nano(given: str, written: str) -> None:
    assert go_time(given) == written


BAD_TIMES = [
    "2023-05-04 17:37:03Z",
    "2023-05-04t17:37:03Z",
    "2023-05-04T17:37:03z",
    "2023-13-04T17:37:03Z",
    "2023-02-30T17:37:03Z",
    "2023-05-04T24:00:00Z",
    "2023-05-04T17:37:03,5Z",
    "2023-05-04T17:37:03+24:00",
    "2023-05-04T17:37:03",
]


@pytest.mark.parametrize("bad", BAD_TIMES)
def test_times_go_would_not_parse_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="time"):
        go_time(bad)
    with pytest.raises(ValueError, match=r"history\[0\]\.created"):
        marshal({"history": [{"created": bad}]}, gojson.IMAGE)


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"config": {"Env": "PATH=/bin"}}, "config.Env"),
        ({"config": {"Env": ["a", 1]}}, "config.Env\\[1\\]"),
        ({"config": {"ArgsEscaped": "yes"}}, "config.ArgsEscaped"),
        ({"config": {"Labels": {"a": 1}}}, "config.Labels.a"),
        ({"architecture": 64}, "architecture"),
        ({"config": []}, "config"),
    ],
)
def test_mistyped_known_fields_are_refused_naming_the_field(obj: dict[str, object], path: str) -> None:
    with pytest.raises(ValueError, match=f"^{path}: expected"):
        marshal(obj, gojson.IMAGE)


def test_parse_is_strict_and_keeps_number_literals() -> None:
    assert parse(b'{"a":1.0,"b":2,"c":-0.5e3}') == {"a": "1.0", "b": 2, "c": "-0.5e3"}
    assert isinstance(parse(b"[1.0]")[0], RawNumber)
    for bad, reason in [(b"NaN", "NaN"), (b'{"a":Infinity}', "Infinity"), (b"\xff{}", "UTF-8"), (b"{", "malformed")]:
        with pytest.raises(ValueError, match=reason):
            parse(bad)
