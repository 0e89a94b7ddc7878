"""A pure-Python EROFS writer and reader for TurboOCI's `--fstype erofs`: per layer, the EROFS metadata of
the merged tree, stacked over the layers below, with regular files' blocks mapped to the original layer
tar (writer.py), and the reading side for inspecting such images (reader.py).

References: ../shared/specs/erofs-format.md (the kernel's fs/erofs and erofs-utils, read for facts), and
overlaybd-formats.md §7.5 for how overlaybd layers it.
"""
