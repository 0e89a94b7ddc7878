"""The compiled modules (make compiled, obdlayout/compiled.py): a build counts only while its sources are
unchanged, the interpreted modules are then imported in its place, and both give the same bytes."""

import ast
import importlib
import json
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import obdlayout
from obdlayout.compiled import MANIFEST, PACKAGE_DIR, build_is_current, environment, recorded_build
from obdlayout.compiled import source_digest as digest_of

from .oci_layouts import LayoutBuilder
from .shared import fixture_layers

NOT_BUILT = "the compiled modules are not built from these sources (make compiled): the package runs interpreted"


SUFFIX = EXTENSION_SUFFIXES[0]


def _record(package: Path, *modules: str) -> None:
    sources = {module: digest_of(str(package / module)) for module in modules}
    extensions = sorted(str(p.relative_to(package)) for p in package.rglob(f"*{SUFFIX}"))
    (package / MANIFEST).write_text(json.dumps({"sources": sources, "extensions": extensions}))


def test_a_build_counts_only_while_its_sources_and_extension_files_are_the_ones_it_made(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("B = 1\n")
    for extension in (f"a{SUFFIX}", f"sub/b{SUFFIX}", f"shared{SUFFIX}"):
        (tmp_path / extension).write_bytes(b"")
    assert not build_is_current(str(tmp_path))  # nothing recorded
    _record(tmp_path, "a.py", "sub/b.py")
    assert build_is_current(str(tmp_path))
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")  # an edited source
    assert not build_is_current(str(tmp_path))
    _record(tmp_path, "a.py", "sub/b.py")
    (tmp_path / f"shared{SUFFIX}").unlink()  # a missing extension file (the shared library, here)
    assert not build_is_current(str(tmp_path))
    (tmp_path / f"shared{SUFFIX}").write_bytes(b"")
    (tmp_path / f"stale{SUFFIX}").write_bytes(b"")  # one the build did not make
    assert not build_is_current(str(tmp_path))
    (tmp_path / f"stale{SUFFIX}").unlink()
    assert build_is_current(str(tmp_path))
    (tmp_path / "sub" / "b.py").unlink()  # a source gone
    assert not build_is_current(str(tmp_path))
    damaged_records = (
        "{", "[]", '{"sources": 3, "extensions": []}', '{"sources": {"a.py": 7}, "extensions": []}',
        '{"sources": {}, "extensions": []}', '{"sources": {"a.py": "00"}}',
    )  # fmt: skip
    for damaged in damaged_records:
        (tmp_path / MANIFEST).write_text(damaged)
        assert not build_is_current(str(tmp_path)), damaged


def test_sources_first_passes_over_an_extension_module_beside_the_source(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("WHERE = 'source'\n")
    (package / f"mod{SUFFIX}").write_bytes(b"not a shared object")
    (package / f"orphan{SUFFIX}").write_bytes(b"not a shared object")  # its source is gone
    load = "import pkg.mod; print(pkg.mod.WHERE)"
    plain = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True)
    assert plain.returncode != 0 and "ImportError" in plain.stderr  # Python's own choice: the extension
    first = "import sys; from obdlayout.compiled import _SourcesFirst; sys.meta_path.insert(0, _SourcesFirst('pkg'));"
    chosen = subprocess.run([sys.executable, "-c", first + load], cwd=tmp_path, capture_output=True, text=True)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == "source"
    orphan = subprocess.run(
        [sys.executable, "-c", first + "import pkg.orphan"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "ModuleNotFoundError: No module named 'pkg.orphan'" in orphan.stderr, orphan.stderr


def test_only_compiled_modules_declare_final_names() -> None:
    """mypyc copies the value of a Final name into the compiled code that uses it, from any module: one in an
    interpreted module could be edited with the build still counted current."""
    compiled, _ = recorded_build(PACKAGE_DIR)
    if not compiled:
        pytest.skip(NOT_BUILT)
    package = Path(PACKAGE_DIR)
    declaring = []
    for source in sorted(package.rglob("*.py")):
        if str(source.relative_to(package)) in compiled:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.AnnAssign) and "Final" in ast.unparse(node.annotation):
                declaring.append(f"{source.relative_to(package)}:{node.lineno}")
    assert declaring == []


def _module_files(interpreted: bool) -> dict[str, str]:
    """Where each compiled module is imported from, in a fresh interpreter."""
    names = [f"obdlayout.{path.removesuffix('.py').replace('/', '.')}" for path in recorded_build(PACKAGE_DIR)[0]]
    code = (
        "import importlib, json, sys; print(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))"
    )
    env = environment(interpreted)
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=env, check=True)
    files: dict[str, str] = json.loads(done.stdout)
    return files


def test_the_compiled_modules_run_when_built_and_the_sources_when_asked() -> None:
    if not obdlayout.COMPILED:
        pytest.skip(NOT_BUILT)
    compiled = _module_files(interpreted=False)
    assert len(compiled) >= 30
    assert all(path.endswith(EXTENSION_SUFFIXES[0]) for path in compiled.values()), compiled
    assert importlib.import_module("obdlayout.ext4.fs").__file__ == compiled["obdlayout.ext4.fs"]
    interpreted = _module_files(interpreted=True)
    assert all(path.endswith(".py") for path in interpreted.values()), interpreted


@pytest.mark.parametrize(
    ("image", "options"),
    [
        ("rules", ("-o", "t")),
        ("big", ("-o", "t")),  # ZFile batches through the compression pool
        ("rules", ("--turbo-oci", "t")),
        ("rules", ("--turbo-oci", "t", "--fstype", "erofs", "--vsize", "1")),
    ],
)
def test_compiled_and_interpreted_conversions_give_the_same_bytes(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, image: str, options: tuple[str, ...]
) -> None:
    if not obdlayout.COMPILED:
        pytest.skip(NOT_BUILT)
    builder = LayoutBuilder(tmp_path / "src")
    compression = "none" if image == "big" else "gzip"
    tars = fixture_layers(tmp_path_factory)[image]
    builder.tag("src", builder.image([builder.layer_from_tar(tar.read_bytes(), compression) for tar in tars]))
    source = builder.save()
    outputs = {}
    for interpreted in (False, True):
        out = tmp_path / ("interpreted" if interpreted else "compiled")
        env = environment(interpreted)
        command = [sys.executable, "-m", "obdlayout.cli", "convert", str(source), str(out), "-q", "-i", "src"]
        done = subprocess.run([*command, "--no-cache", *options], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs[interpreted] = {p.name: p.read_bytes() for p in (out / "blobs" / "sha256").iterdir()}
    assert outputs[False].keys() == outputs[True].keys()
    assert outputs[False] == outputs[True]
