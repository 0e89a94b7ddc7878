"""Errors of applying a layer: the layer as a whole, and the problems that stop one entry of it."""

from ..errors import ObdlayoutError


class LayerError(ObdlayoutError):
    """A layer cannot be applied: `where` names the layer, `problem` the entry (where known) and the fault."""


class EntryError(ObdlayoutError):
    """What stops one entry. Raised without a place: the file system or the rules cannot know which layer
    they are in, so `rules.apply_layer` adds the layer and the entry's name."""

    def __init__(self, problem: str) -> None:
        super().__init__("", problem)


class RuleError(EntryError):
    """The layer rules refuse the entry: a hard link to nothing or to a directory, an owner too large, a
    tar entry type that is no file system object."""


class TreeError(EntryError):
    """The file system cannot hold or do what the entry asks (each file system derives its own errors)."""
