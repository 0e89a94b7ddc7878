"""The `obdlayout` command line."""
