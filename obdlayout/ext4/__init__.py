"""A pure-Python ext4 writer and reader: mkfs, and a file system on a stack of lower layers that the OCI
layer rules (layers/) drive through `fs.Filesystem`, a layers.tree.FileTree; placement.py decides where
regular files' data goes.

References: the Linux kernel's ext4 disk-layout documentation (Documentation/filesystems/ext4/),
and shared/specs/overlaybd-formats.md §6 for what overlaybd's tools make and expect.
"""
