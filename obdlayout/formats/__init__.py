"""The overlaybd layer blob formats: LSMT, ZFile and the tar wrapper.

Knows nothing of ext4 or OCI. Facts: shared/specs/overlaybd-formats.md §1-4 and §11.
"""
