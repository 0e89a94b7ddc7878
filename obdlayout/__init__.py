"""obdlayout: turn OCI image layouts into overlaybd images, in pure Python.

The Python API (api.py): `convert(source, destination, ...)` returns the report `obdlayout convert --json`
prints; `open_image(layout, tag)` reads a converted image. Errors are `ObdlayoutError`s (`OptionError` for
arguments that do not fit together).
"""

__version__ = "0.1.0"

from . import compiled

COMPILED = compiled.choose(__name__)  # before any other module of the package is imported

from .api import Image, OptionError, convert, open_image  # noqa: E402 (after the choice above)
from .errors import ObdlayoutError  # noqa: E402

__all__ = ["Image", "ObdlayoutError", "OptionError", "__version__", "convert", "open_image"]
