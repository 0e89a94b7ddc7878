"""The error of the read side: a path or an image that cannot be shown as asked."""

from ..errors import ObdlayoutError


class InspectError(ObdlayoutError):
    """`where` names the image (and path) at fault, `problem` says what is wrong."""
