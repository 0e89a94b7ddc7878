"""obdlayout: turn OCI image layouts into overlaybd images, in pure Python."""

__version__ = "0.1.0"
