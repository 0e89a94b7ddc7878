"""A pure-Python ext4 writer: mkfs, and applying OCI layers on top of a stack of lower layers.

References: the Linux kernel's ext4 disk-layout documentation (Documentation/filesystems/ext4/),
and shared/specs/overlaybd-formats.md §6 for what overlaybd's tools make and expect.
"""
