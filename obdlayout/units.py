"""Sizes, named once."""

from collections.abc import Callable

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
# Streams (layer tars, blobs, file contents) are read, hashed and copied in pieces of this size: large
# enough that per-call overhead vanishes, small enough that memory stays bounded whatever the input.
STREAM_CHUNK = MiB
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
MEANINGFUL_SECONDS = 0.5  # below this, a rate says more about timer noise than about throughput


def human_size(size: int | float) -> str:
    """1536 -> "1.5 KiB"; whole bytes below 1 KiB."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < KiB or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KiB
    raise AssertionError("unreachable")


def human_rate(size: int, seconds: float) -> str | None:
    """ "41.2 MiB/s", or None when the time is too short for a rate to mean anything."""
    if seconds < MEANINGFUL_SECONDS:
        return None
    return f"{human_size(size / seconds)}/s"


_SIZE_UNITS = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB, "G": GiB, "GB": GiB,
               "GIB": GiB, "T": GiB * KiB, "TB": GiB * KiB, "TIB": GiB * KiB}  # fmt: skip
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """ "20G", "500MiB", "1.5T", "4096" -> bytes (binary units); ValueError naming the text."""
    return int(_quantity(text, _SIZE_UNITS, "a size (like 500M, 20G)", lambda t: t.rstrip("KMGTBkmgtbi")))


def parse_age(text: str) -> float:
    """ "90s", "30m", "12h", "7d", "2w" -> seconds; ValueError naming the text."""
    return _quantity(text, _AGE_UNITS, "an age (like 12h, 7d)", lambda t: t[:-1])


def _quantity(text: str, units: dict[str, int], what: str, number_part: Callable[[str], str]) -> float:
    stripped = text.strip()
    head = number_part(stripped)
    unit = stripped[len(head) :]
    unit = unit.upper() if units is _SIZE_UNITS else unit
    try:
        value = float(head)
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None
    if unit not in units or value < 0:
        raise ValueError(f"{text!r} is not {what}")
    return value * units[unit]
