"""Errors of the ext4 writer and reader. They name no place: the caller knows the layer and entry."""

from ..layers.errors import TreeError


class Ext4Error(TreeError):
    """The file system cannot be read or changed as asked."""


class UnsupportedFilesystem(Ext4Error):
    """The lower file system uses a feature this writer cannot keep consistent."""


class CorruptFilesystem(Ext4Error):
    """A structure of the lower file system breaks the ext4 rules."""


class NoSpace(Ext4Error):
    """The virtual disk is full; the message says how large a disk would hold the layers."""
