"""The one error type of the formats package: a fault in a named blob."""

from ..errors import ObdlayoutError


class FormatError(ObdlayoutError):
    """A blob breaks a rule of its format; `where` names the file (and member) at fault."""
