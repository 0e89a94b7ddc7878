"""The error of the convert pipeline."""

from ..errors import ObdlayoutError


class ConvertError(ObdlayoutError):
    """A conversion failed: `where` names the image and layer (or the option or file), `problem` the fault."""
