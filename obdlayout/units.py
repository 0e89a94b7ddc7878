"""Sizes, named once."""

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
