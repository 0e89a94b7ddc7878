"""What a convert shows while it runs (bars on a terminal, lines elsewhere), and what its start loads."""

import io
import subprocess
import sys

import pytest

from obdlayout.convert.progress import Display, Events, LayerFinished, LayerProgress, LayerStarted, Message


def _show(mode: str) -> str:
    stream = io.StringIO()
    events = Events()
    with Display(events, mode, stream):
        events.send(LayerStarted("k1", "img layer 1/2"))
        events.send(LayerProgress("k1", 1000))
        events.send(LayerFinished("k1", "img layer 1/2", 2_000_000, 500_000, 1.5, reused=False))
        events.send(LayerFinished("k2", "img layer 2/2", 0, 300_000, 0.0, reused=True))
        events.send(Message("the tar names /etc twice", warning=True))
    return stream.getvalue()


def test_lines_say_what_each_layer_became() -> None:
    shown = _show("lines")
    assert "converting img layer 1/2" in shown
    assert "converted  img layer 1/2: 1.9 MiB of tar (1.5 s, 1.3 MiB/s), 488.3 KiB written" in shown
    assert "reused     img layer 2/2" in shown
    assert "warning: the tar names /etc twice" in shown


def test_bars_end_full_and_print_what_has_no_bar() -> None:
    shown = _show("bars")
    assert "img layer 1/2" in shown
    assert "2.0/2.0 MB" in shown  # the finished bar shows the layer's whole tar
    assert "reused     img layer 2/2" in shown  # no bar was started for it: a line instead
    assert "warning: the tar names /etc twice" in shown


def test_quiet_shows_warnings_only() -> None:
    assert _show("quiet").strip().splitlines() == ["warning: the tar names /etc twice"]


@pytest.mark.parametrize("unneeded", ["rich", "pymysql", "obdlayout.cli.blob", "obdlayout.cli.inspect"])
def test_a_convert_starts_without_what_it_does_not_use(unneeded: str) -> None:
    """Each of these costs every run's start time: the bars only a terminal shows, the MySQL cache's driver,
    the other commands."""
    code = (
        "import sys; from obdlayout.cli.main import cli; cli.get_command(None, 'convert'); "
        f"print({unneeded!r} in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
