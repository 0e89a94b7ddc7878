"""Errors of the EROFS writer and reader. They name no place: the caller knows the layer and entry."""

from ..layers.errors import TreeError


class ErofsError(TreeError):
    """The file system cannot be read or changed as asked."""


class CorruptErofs(ErofsError):
    """A structure of the image breaks the EROFS rules (or holds what this reader does not support)."""
