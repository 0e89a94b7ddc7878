"""Errors of the ext4 writer."""


class Ext4Error(Exception):
    """The file system cannot be read or changed as asked."""


class UnsupportedFilesystem(Ext4Error):
    """The lower file system uses a feature this writer cannot keep consistent."""


class CorruptFilesystem(Ext4Error):
    """A structure of the lower file system breaks the ext4 rules."""


class NoSpace(Ext4Error):
    """The virtual disk is full."""

    def __init__(self, message: str, needed_blocks: int) -> None:
        super().__init__(message)
        self.needed_blocks = needed_blocks
