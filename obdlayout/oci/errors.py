"""The one error type of the oci package: a fault in a named file of an image layout, or in an image it holds."""

from ..errors import ObdlayoutError


class LayoutError(ObdlayoutError):
    """`where` names the file (or the image and manifest) at fault, `problem` says what is wrong with it."""
