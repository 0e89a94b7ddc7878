"""`python -m obdlayout.cli`: the same as the `obdlayout` command."""

from .main import main

main()
