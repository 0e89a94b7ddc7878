"""The Python API, used as a pipeline that is Python already uses it: only `obdlayout.convert` and
`obdlayout.open_image` (and the errors they raise)."""

import json
from pathlib import Path

import pytest

import obdlayout
from fixtures.sample_layout import build

from .test_inspect_support import run


def test_convert_then_read_with_the_api_only(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build(source, "demo")
    report = obdlayout.convert(source, tmp_path / "out", tags=["demo"], turbo_oci="demo-turbo", output_tag="demo-obd")
    assert sorted(o["tag"] for o in report["outputs"]) == ["demo-obd", "demo-turbo"]
    assert {o["format"] for o in report["outputs"]} == {"overlaybd", "turbo-oci"}
    assert json.loads(json.dumps(report)) == report  # what --json prints: plain JSON
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    digests = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in index["manifests"]}
    assert {o["tag"]: o["digest"] for o in report["outputs"]} == digests
    for tag in ("demo-obd", "demo-turbo"):
        with obdlayout.open_image(tmp_path / "out", tag) as image:
            assert image.manifest_digest == digests[tag]
            assert image.platform == "linux/amd64"
            assert "index.html" in image.ls("/srv/www")
            page = image.read("/srv/www/index.html")
            assert page == b"".join(image.iter_read("/srv/www/index.html"))
    cli = run("cat", f"{tmp_path / 'out'}:demo-obd", "/srv/www/index.html")
    assert cli.stdout_bytes == page


def test_the_api_reports_like_the_command(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build(source, "demo")
    api_report = obdlayout.convert(source, tmp_path / "a")
    cli = run("convert", str(source), str(tmp_path / "b"), "--json", "-q")
    cli_report = json.loads(cli.stdout)
    assert [o["digest"] for o in api_report["outputs"]] == [o["digest"] for o in cli_report["outputs"]]
    assert set(api_report) == set(cli_report) == {"outputs", "images", "warnings", "seconds", "cache"}


def test_bad_arguments_and_inputs_raise_obdlayout_errors(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build(source, "demo")
    with pytest.raises(obdlayout.OptionError, match="both be tagged"):
        obdlayout.convert(source, tmp_path / "out", output_tag="x", turbo_oci="x")
    with pytest.raises(obdlayout.OptionError, match="block size"):
        obdlayout.convert(source, tmp_path / "out", block_kib=3)
    with pytest.raises(obdlayout.ObdlayoutError, match="no entry is tagged 'nope'"):
        obdlayout.convert(source, tmp_path / "out", tags=["nope"])
    with pytest.raises(obdlayout.ObdlayoutError, match=r"not a directory|oci-layout"):
        obdlayout.open_image(tmp_path / "nothing", "demo")
    assert not (tmp_path / "out").exists()
