"""The layer and manifest cache: SQLite beside the content store by default, a real MariaDB for fleets.

A hit must give the bytes a conversion without the cache gives: the tests compare with `--no-cache` runs,
and prove layers were not read by deleting their blobs from the source before the run that must not need
them.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixtures.make_layers import pseudo
from obdlayout import api
from obdlayout.cache.dsn import DsnError, parse_dsn
from obdlayout.convert.progress import Event, Events, LayerFinished
from obdlayout.units import parse_age, parse_size

from .mariadb import PASSWORD, MariaDB
from .oci_layouts import LayoutBuilder
from .standin_tools import CALLS_ENV, FAIL_ENV, calls, install
from .test_inspect_support import run

ROOT = Path(__file__).resolve().parent.parent
Factory = pytest.TempPathFactory
SEED_SCHEMA = [  # the Go convertor's tables (convertor-spec.md §4.2), as its sample mysql.conf makes them
    "CREATE TABLE overlaybd_layers (host varchar(255) NOT NULL, repo varchar(255) NOT NULL,"
    " chain_id varchar(255) NOT NULL, data_digest varchar(255) NOT NULL, data_size bigint(20) NOT NULL,"
    " PRIMARY KEY (host, repo, chain_id), KEY index_registry_chainId (host, chain_id)) DEFAULT CHARSET=utf8",
    "CREATE TABLE overlaybd_manifests (host varchar(255) NOT NULL, repo varchar(255) NOT NULL,"
    " src_digest varchar(255) NOT NULL, out_digest varchar(255) NOT NULL, data_size bigint(20) NOT NULL,"
    " mediatype varchar(255) NOT NULL, PRIMARY KEY (host, repo, src_digest, mediatype),"
    " KEY index_registry_src_digest (host, src_digest, mediatype)) DEFAULT CHARSET=utf8",
]


def _files(seed: int, count: int, size: int) -> dict[str, bytes]:
    return {f"data/{seed}/file{i}": pseudo(seed * 100 + i, size) for i in range(count)}


@dataclass(frozen=True)
class Images:
    layout: Path
    layers: dict[str, str]  # name -> blob digest


def _images(root: Path, size: int = 20_000) -> Images:
    """Images sharing lower layers: a, b = base + mid + their own; c = base + its own; d = base + mid + its own."""
    builder = LayoutBuilder(root)
    layers = {
        "base": builder.layer({**_files(1, 3, size), "etc/os-release": b"ID=base\n"}),
        "mid": builder.layer({**_files(2, 3, size), "usr/bin/tool": b"#!/bin/sh\n"}, compression="none"),
        **{name: builder.layer(_files(10 + n, 2, size)) for n, name in enumerate("abcd")},
    }
    stacks = {"a": ["base", "mid", "a"], "b": ["base", "mid", "b"], "c": ["base", "c"], "d": ["base", "mid", "d"]}
    for tag, stack in stacks.items():
        builder.tag(tag, builder.image([layers[name] for name in stack]))
    builder.save()
    return Images(root, {name: layer["digest"] for name, layer in layers.items()})


def _unreadable(images: Images, names: list[str], where: Path) -> Path:
    """A copy of the source layout whose blobs of the layers `names` are zeros (their size kept, so that the
    plan, which checks sizes, accepts them): a run that reads them fails on their digest."""
    shutil.copytree(images.layout, where)
    for name in names:
        blob = where / "blobs" / "sha256" / images.layers[name].removeprefix("sha256:")
        blob.write_bytes(bytes(blob.stat().st_size))
    return where


def _convert(source: Path, out: Path, *args: str) -> dict[str, Any]:
    result = run("convert", str(source), str(out), "-q", "--json", "-j", "1", *args)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _origins(report: dict[str, Any]) -> list[str]:
    return [
        "cached" if layer["cached"] else "reused" if layer["reused"] else "converted"
        for image in report["images"]
        for layer in image["layers"]
    ]


def _tagged(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in index["manifests"]}


def _verify(out: Path, tag: str, source: Path, source_tag: str) -> None:
    result = run("verify", f"{out}:{tag}", "--against", f"{source}:{source_tag}")
    assert result.exit_code == 0, result.output


# -- one machine, SQLite ------------------------------------------------------------------------------------


def test_a_second_image_reuses_the_shared_layers_without_reading_them(tmp_path: Path) -> None:
    images = _images(tmp_path / "src")
    first = _convert(images.layout, tmp_path / "one", "-i", "a")
    assert _origins(first) == ["converted"] * 3
    # base and mid are in the cache: their blobs may be garbage, since they are not read.
    lacking = _unreadable(images, ["base", "mid"], tmp_path / "src-lacking")
    second = _convert(lacking, tmp_path / "two", "-i", "b")
    assert _origins(second) == ["cached", "cached", "converted"]
    plain = _convert(images.layout, tmp_path / "plain", "-i", "b", "--no-cache")
    assert plain["cache"] is None
    assert _tagged(tmp_path / "two") == _tagged(tmp_path / "plain")
    assert sorted(os.listdir(tmp_path / "two" / "blobs" / "sha256")) == sorted(
        os.listdir(tmp_path / "plain" / "blobs" / "sha256")
    )
    _verify(tmp_path / "two", "b", images.layout, "b")


def test_the_same_image_and_options_come_from_the_manifest_cache(tmp_path: Path) -> None:
    images = _images(tmp_path / "src")
    both = ("-i", "a", "--turbo-oci", "a-turbo", "-o", "a-obd")
    _convert(images.layout, tmp_path / "one", *both)
    again = _convert(images.layout, tmp_path / "two", *both)
    assert again["images"] == []  # no layer converted or looked up
    assert all(output["cached"] for output in again["outputs"])
    assert _tagged(tmp_path / "two") == _tagged(tmp_path / "one")
    _verify(tmp_path / "two", "a-obd", images.layout, "a")
    _verify(tmp_path / "two", "a-turbo", images.layout, "a")  # the targets were published too
    # No layer is even read (the TurboOCI image needs its source blobs, as targets: not asked for here).
    unreadable = _unreadable(images, ["base", "mid", "a"], tmp_path / "src-unreadable")
    third = _convert(unreadable, tmp_path / "three", "-i", "a", "-o", "a-obd")
    assert third["outputs"][0]["cached"] and third["images"] == []
    assert _tagged(tmp_path / "three")["a-obd"] == _tagged(tmp_path / "one")["a-obd"]


@pytest.mark.parametrize(
    ("options", "layers_hit"),
    [
        (("--algorithm", "zstd"), False),
        (("--bs", "16"), False),
        (("--vsize", "2"), False),
        (("--turbo-oci", "t"), False),
        (("--docker-media-types",), True),  # the layers are the same; the image is not
        (("--referrer",), True),
    ],
)
def test_any_option_that_changes_bytes_misses(tmp_path: Path, options: tuple[str, ...], layers_hit: bool) -> None:
    images = _images(tmp_path / "src")
    _convert(images.layout, tmp_path / "one", "-i", "a")
    changed = _convert(images.layout, tmp_path / "two", "-i", "a", *options)
    assert not any(output["cached"] for output in changed["outputs"])
    assert _origins(changed) == (["cached"] * 3 if layers_hit else ["converted"] * 3)
    _convert(images.layout, tmp_path / "plain", "-i", "a", "--no-cache", *options)
    assert _tagged(tmp_path / "two") == _tagged(tmp_path / "plain")


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_store_blob_is_found_converted_again_and_never_published(
    tmp_path: Path, private_cache: Path, damage: str
) -> None:
    images = _images(tmp_path / "src")
    first = _convert(images.layout, tmp_path / "one", "-i", "a")
    blob = private_cache / "blobs" / "sha256" / first["images"][0]["layers"][1]["digest"].removeprefix("sha256:")
    if damage == "flip":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x40
        blob.unlink()  # it is a hard link of the first DST's blob: write a new file
        blob.write_bytes(bytes(data))
    else:
        blob.unlink()
    again = _convert(images.layout, tmp_path / "two", "-i", "a", "-o", "again")
    assert any("missing or damaged" in warning or "is gone" in warning for warning in again["warnings"])
    assert not again["outputs"][0]["cached"]
    assert _origins(again)[1] == "converted"
    assert _tagged(tmp_path / "two")["again"] == _tagged(tmp_path / "one")["a"]
    _verify(tmp_path / "two", "again", images.layout, "a")
    assert run("cache", "verify").exit_code == 0


def test_cache_commands_list_count_verify_and_collect(tmp_path: Path, private_cache: Path) -> None:
    images = _images(tmp_path / "src")
    _convert(images.layout, tmp_path / "one", "-i", "a", "-i", "c")
    listed = json.loads(run("cache", "ls", "--json").stdout)
    assert sorted(entry["kind"] for entry in listed) == ["layer"] * 4 + ["manifest"] * 2
    stats = json.loads(run("cache", "stats", "--json").stdout)
    assert (stats["layers"], stats["manifests"], stats["unreferenced_blobs"]) == (4, 2, 0)
    assert stats["bytes"] == sum(p.stat().st_size for p in (private_cache / "blobs" / "sha256").iterdir())
    assert json.loads(run("cache", "verify", "--json").stdout)["damaged"] == []
    kept = run("cache", "gc", "--older-than", "1h", "--json")
    assert json.loads(kept.stdout)["entries_dropped"] == 0
    emptied = json.loads(run("cache", "gc", "--max-size", "0", "--json").stdout)
    assert emptied["entries_dropped"] == 6 and emptied["blobs_removed"] == stats["blobs"]
    assert json.loads(run("cache", "stats", "--json").stdout)["bytes"] == 0


def test_gc_leaves_the_blobs_a_running_conversion_pins(tmp_path: Path, private_cache: Path) -> None:
    images = _images(tmp_path / "src")
    first = _convert(images.layout, tmp_path / "one", "-i", "a")
    held = first["images"][0]["layers"][0]["digest"]
    with sqlite3.connect(private_cache / "index.sqlite") as db:  # a conversion elsewhere, still running
        db.execute("INSERT INTO obdlayout_pins VALUES (?, 'other-run/1', ?)", (held, time.time() + 600))
    run("cache", "gc", "--max-size", "0")
    remaining = {p.name for p in (private_cache / "blobs" / "sha256").iterdir()}
    assert remaining == {held.removeprefix("sha256:")}


def test_a_converter_killed_holding_a_claim_is_taken_over(tmp_path: Path) -> None:
    """On the same machine the dead claimant is seen at once (its PID is gone): no wait for its lease."""
    images = _images(tmp_path / "src")
    tools = install(tmp_path / "tools")
    log = tmp_path / "calls.jsonl"
    common = [sys.executable, "-m", "obdlayout.cli", "convert", str(images.layout), "-i", "a", "-j", "1"]
    common += ["--engine", "overlaybd-tools", "--tools-dir", str(tools), "--cache-lease", "600"]
    env = {**os.environ, CALLS_ENV: str(log)}
    hang = {**env, FAIL_ENV: "overlaybd-apply:hang"}
    stuck = subprocess.Popen([*common, str(tmp_path / "one"), "-q"], env=hang, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not any(call["tool"] == "overlaybd-apply" for call in calls(log)):
        assert stuck.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    stuck.send_signal(signal.SIGKILL)  # it holds the claim on layer 0, for ten minutes
    stuck.wait()
    taking_over = subprocess.run([*common, str(tmp_path / "two"), "-v"], env=env, cwd=ROOT, capture_output=True,
                                 text=True, timeout=120)  # fmt: skip
    assert taking_over.returncode == 0, taking_over.stderr
    assert "waiting" not in taking_over.stderr
    assert sum(call["tool"] == "overlaybd-commit" for call in calls(log)) == 3  # it converted all three
    _verify(tmp_path / "two", "a", images.layout, "a")


def test_a_claim_from_another_machine_is_taken_over_after_its_lease(tmp_path: Path, private_cache: Path) -> None:
    images = _images(tmp_path / "src")
    _convert(images.layout, tmp_path / "one", "-i", "a")
    keys = [entry["key"] for entry in json.loads(run("cache", "ls", "--json").stdout) if entry["kind"] == "layer"]
    run("cache", "gc", "--max-size", "0")  # forget the layers, keep their keys
    with sqlite3.connect(private_cache / "index.sqlite") as db:  # a converter elsewhere claimed them, and died
        for key in keys:
            db.execute(
                "INSERT INTO obdlayout_claims VALUES (?, 'another-machine:0123/42', ?)",
                (f"layer:{key}", time.time() + 2),
            )
    result = run("convert", str(images.layout), str(tmp_path / "two"), "-i", "a", "-v", "--json", "-j", "1")
    assert result.exit_code == 0, result.output
    assert "another converter is making this layer; waiting for it" in result.stderr
    assert _origins(json.loads(result.stdout)) == ["converted"] * 3
    with sqlite3.connect(private_cache / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM obdlayout_claims").fetchone() == (0,)  # released when done


# -- a fleet: MariaDB ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: Factory) -> Iterator[MariaDB]:
    server = MariaDB(tmp_path_factory.mktemp("mariadb")).start()
    try:
        yield server
    finally:
        server.stop()


def test_mariadb_cache_shares_layers_and_never_shows_the_password(tmp_path: Path, mariadb: MariaDB) -> None:
    dsn = mariadb.database()
    images = _images(tmp_path / "src")
    store = ("--cache-dir", str(tmp_path / "store"), "--db-type", "mysql", "--db-str", dsn)
    first = _convert(images.layout, tmp_path / "one", "-i", "a", *store)
    assert first["cache"]["status"] == "on" and PASSWORD not in json.dumps(first)
    lacking = _unreadable(images, ["base", "mid"], tmp_path / "src-lacking")
    second = _convert(lacking, tmp_path / "two", "-i", "b", *store)
    assert _origins(second) == ["cached", "cached", "converted"]
    plain = _convert(images.layout, tmp_path / "plain", "-i", "b", "--no-cache")
    assert plain["outputs"][0]["digest"] == second["outputs"][0]["digest"]
    database = dsn.rsplit("/", 1)[1]
    rows = mariadb.query(database, "SELECT chain_id, data_digest FROM overlaybd_layers")
    assert len(rows) == 4 and all(str(digest).startswith("sha256:") for _, digest in rows)
    listed = run("cache", "ls", *store)
    assert listed.exit_code == 0 and PASSWORD not in listed.output


def test_four_converters_at_once_convert_each_shared_layer_once(tmp_path: Path, mariadb: MariaDB) -> None:
    dsn = mariadb.database()
    images = _images(tmp_path / "src", size=2_000_000)  # big enough that they overlap in time
    store = ["--cache-dir", str(tmp_path / "store"), "--db-type", "mysql", "--db-str", dsn]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "obdlayout.cli", "convert", str(images.layout), str(tmp_path / f"out-{tag}"),
             "-i", tag, "-q", "--json", "-j", "1", *store],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in "abcd"
    ]  # fmt: skip
    reports = {}
    for tag, proc in zip("abcd", procs, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports[tag] = json.loads(out)
    made: dict[str, int] = {}
    for report in reports.values():
        for layer in report["images"][0]["layers"]:
            made[layer["source_digest"]] = made.get(layer["source_digest"], 0) + (not layer["reused"])
    assert made == dict.fromkeys(images.layers.values(), 1), made
    for tag in "abcd":
        _verify(tmp_path / f"out-{tag}", tag, images.layout, tag)


class _StopsTheDatabase(Events):
    """Stops MariaDB once the first layer is done (events reach it in process: one image at a time)."""

    def __init__(self, server: MariaDB) -> None:
        super().__init__(shown=False)
        self.server = server

    def send(self, event: Event) -> None:
        if isinstance(event, LayerFinished) and self.server.process is not None:
            self.server.stop()


def test_the_database_going_away_mid_run_is_a_warning(tmp_path: Path, tmp_path_factory: Factory) -> None:
    server = MariaDB(tmp_path_factory.mktemp("mariadb-stopping")).start()
    try:
        dsn = server.database()
        images = _images(tmp_path / "src")
        report = api.convert(
            images.layout, tmp_path / "out", tags=["a", "c"], db_type="mysql", db_str=dsn,
            cache_dir=tmp_path / "store", concurrency=1, jobs=1, events=_StopsTheDatabase(server),
        )  # fmt: skip
    finally:
        server.stop()
    assert report["cache"]["status"].startswith("off: ")
    assert any("the cache is off for the rest of this run" in warning for warning in report["warnings"])
    assert PASSWORD not in json.dumps(report)
    for tag in ("a", "c"):
        _verify(tmp_path / "out", tag, images.layout, tag)


def test_a_go_convertor_database_works_after_the_migration(tmp_path: Path, mariadb: MariaDB) -> None:
    dsn = mariadb.database("seed")
    database = dsn.rsplit("/", 1)[1]
    for statement in SEED_SCHEMA:
        mariadb.query(database, statement)
    go_row = (
        "INSERT INTO overlaybd_layers VALUES ('reg.example', 'app', 'sha256:"
        + "1" * 64
        + "', 'sha256:"
        + "2" * 64
        + "', 42)"
    )
    mariadb.query(database, go_row)
    images = _images(tmp_path / "src")
    store = ("--cache-dir", str(tmp_path / "store"), "--db-type", "mysql", "--db-str", dsn)
    before = _convert(images.layout, tmp_path / "one", "-i", "a", *store)
    assert before["cache"]["status"].startswith("off: ") and "obdlayout cache migrate" in before["cache"]["status"]
    migrated = run("cache", "migrate", "--db-str", dsn)
    assert migrated.exit_code == 0 and "migrated" in migrated.output
    assert "already migrated" in run("cache", "migrate", "--db-str", dsn).output
    _convert(images.layout, tmp_path / "two", "-i", "a", *store)
    again = _convert(images.layout, tmp_path / "three", "-i", "b", *store)
    assert _origins(again) == ["cached", "cached", "converted"]
    # The Go convertor's own statements still work on the migrated tables, and its row is untouched.
    mariadb.query(
        database,
        "INSERT INTO overlaybd_layers(host, repo, chain_id, data_digest, data_size) VALUES ('r', 'x', 'c', 'd', 1)",
    )
    go_rows = mariadb.query(database, "SELECT data_size FROM overlaybd_layers WHERE host='reg.example' AND repo='app'")
    assert go_rows == [(42,)]


# -- the small parts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("u:s3cret@tcp(db.example:3307)/conv", ("u", "s3cret", "db.example", 3307, "conv")),
        ("u:s3:c@ret@tcp(10.0.0.1)/conv?parseTime=true", ("u", "s3:c@ret", "10.0.0.1", 3306, "conv")),
        ("mysql://u:s3c%40ret@db.example/conv", ("u", "s3c@ret", "db.example", 3306, "conv")),
    ],
)
def test_dsns_parse_as_the_go_driver_reads_them(text: str, expected: tuple[object, ...]) -> None:
    dsn = parse_dsn(text)
    assert (dsn.user, dsn.password, dsn.host, dsn.port, dsn.database) == expected
    assert dsn.password not in str(dsn)


@given(st.text(max_size=60))
def test_any_dsn_text_parses_or_is_refused(text: str) -> None:
    with suppress(DsnError):
        parse_dsn(text)


def test_sizes_and_ages() -> None:
    assert parse_size("20G") == 20 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("0") == 0
    assert parse_age("12h") == 43200 and parse_age("7d") == 604800
    for bad in ("", "G", "5Q", "-1"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError):
        parse_age("soon")
