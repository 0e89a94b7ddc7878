"""Sizes, named once."""

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
# Streams (layer tars, blobs, file contents) are read, hashed and copied in pieces of this size: large
# enough that per-call overhead vanishes, small enough that memory stays bounded whatever the input.
STREAM_CHUNK = MiB
